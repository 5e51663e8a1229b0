"""Event plugins as Lambda functions (DESIGN.md "Plugins").

On AWS each plugin is its own function behind an EventBridge rule on the archive's bus
(``infra.constructs.plugins``): the rule matches the archive's ``source`` and the plugin's detail types
(``InstanceStored``, ``InstanceDeleted``, ``StudyChanged``), and EventBridge invokes the function
asynchronously with the whole EventBridge event; ``event["detail"]`` is the :class:`ArchiveEvent` detail
as the publisher sent it (``skypacs.adapters.eventbridge``).

A plugin handler is declared in the CDK context key ``plugins`` by its dotted path in the Lambda bundle,
e.g. ``functions.plugins.event_log.handler``. A handler that raises is retried by Lambda, then the event
goes to the plugins' dead-letter queue: raise only for failures a retry can cure.
"""
