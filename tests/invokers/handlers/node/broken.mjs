// A module that fails while it is loaded (an init error).
throw new Error("node import-time failure");
