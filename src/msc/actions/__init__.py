"""What administrators and investigators do, as library functions (issue 13: every action has a
name; issue 17: one implementation for the ``msc`` command and the web console).

The CLI (:mod:`msc.cli`) parses arguments and prints; the web console (:mod:`msc.web`) renders
pages; both call these functions, so an action journals the same records, names the same person
and refuses the same things whichever way it was asked for. Blocking (SQLite, scrypt, the control
socket): an event loop calls them in a worker thread. May import everything but ``msc.cli``,
``msc.web`` and the switch's internals (it talks to a running switch over its control socket).
"""
