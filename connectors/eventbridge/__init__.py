"""An EventBridge-compatible event bus: ``PutEvents`` on the ingress listener, rules as
mappings of source type ``eventbridge`` (:mod:`connectors.eventbridge.source`).
:mod:`connectors.eventbridge.events` validates ``PutEvents`` requests and builds events;
:mod:`connectors.eventbridge.transform` is a target's input transformation (``Input``,
``InputPath``, ``InputTransformer``)."""
