"""The ``schedule`` source: EventBridge Scheduler semantics (``source.py``) over the AWS
schedule expressions ``cron()``, ``rate()``, ``at()`` and 5-field crontab (``cron.py``)."""
