"""Function URLs: HTTP routes of the ingress listener that invoke a function synchronously
with the Lambda function URL (API Gateway HTTP API payload format 2.0) event and answer with
what it returns. The source type is ``http`` (:mod:`connectors.function_url.source`); the
event and the response mapping are :mod:`connectors.function_url.payload`."""
