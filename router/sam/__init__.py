"""SAM templates turned into router YAML (``router import-sam``)."""

from router.sam.importer import Imported, import_template

__all__ = ["Imported", "import_template"]
