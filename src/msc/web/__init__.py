"""The web console (``msc web``, docs/WEB.md): an operator's terminal with forms, and consoles for
investigators and administrators, served over HTTPS by its own process.

The operator's browser session is an ordinary terminal session at the switch: ``msc web`` opens
one connection per logged-on browser to a ``proxy_protocol`` listener, names the browser's
address in a PROXY header, acknowledges the banner after the person did, sends ``LOGON`` and
relays messages and outputs. Investigators and administrators log on through the same
authentication service as the ``msc`` command and act through :mod:`msc.actions`.
"""
