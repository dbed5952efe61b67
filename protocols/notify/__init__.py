"""Delivering tenant notices: templates, and one adapter per channel (webhook, SMTP, SMS
provider, WeChat), driven by the delivery process (``server.notify_process``)."""
