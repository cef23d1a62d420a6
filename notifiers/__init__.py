"""Story alerts topic → people: webhooks, e-mail, commands and files.

`notifiers.service.NotifierService` consumes the story alerts (and, if asked,
the article alerts) in a consumer group, groups and throttles them per story
on each route (`notifiers.routes`), delivers them with retries
(`notifiers.retry`) through a sink (`notifiers.webhook`, `notifiers.email`,
`notifiers.command`), and commits offsets only after delivery or a dead
letter. `notifiers.console` prints story alerts as ``newswatch run`` finds
them. Run the service with ``newswatch notify``, or configure routes (or pass
``--notify-webhook URL``) and ``newswatch run`` runs it too.
"""
