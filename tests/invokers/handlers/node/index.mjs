// Handlers run by the Node.js runtime interface client in the tests.
import { setTimeout as sleep } from "node:timers/promises";

export const handler = async (event, context) => {
  if (event.sleep) await sleep(event.sleep * 1000);
  if (event.fail) throw new TypeError(event.fail);
  console.log(`node says hello to ${context.awsRequestId}`);
  return {
    pid: process.pid,
    event,
    awsRequestId: context.awsRequestId,
    functionName: context.functionName,
    memoryLimitInMB: context.memoryLimitInMB,
    remaining: context.getRemainingTimeInMillis(),
    clientContext: context.clientContext ?? null,
    identity: context.identity ?? null,
    initializationType: process.env.AWS_LAMBDA_INITIALIZATION_TYPE,
  };
};
