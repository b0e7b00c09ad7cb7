"""``msc status``: which node is active — the lease's holder as the database says — and what this
machine's node is (OPERATIONS.md "Running two nodes"). Journals nothing; runs on either machine.

    node msc-b (this machine): standby (/readyz 503)
    active node: msc-a (lease epoch 7, valid 4.1 s more by the database's clock)

This machine's node is "not running" when nothing listens at its ``[metrics] bind``, and "not
answering (process N exists; paused or hung?)" when a process listens there but ``/readyz`` gave
no answer within READYZ_TIMEOUT_S (SIGSTOP, or a hung loop). A node not running is never listed as
running by its alive mark in the database (``msc_node_seen``: a killed process's, until it ages
out) — that mark is said to be stale; a node that stops cleanly takes its mark back itself.

Exit status (for a monitoring check; OPERATIONS.md "Running two nodes"):

- 0 — a node is active, and this machine's node is it or a standby that could take over;
- 1 — no node is active (the lease expired or was never held), or the node holding the lease is
  known not to serve (this machine's node, not answering — paused or hung —, not running or not
  active; or a holder that never said it knows it holds it), or the lease's database could not
  be asked (a single node: it does not serve);
- 3 (:data:`EXIT_CANNOT_FAIL_OVER`) — a node is active, but this machine's node could not take
  over if it failed: not running, not answering, held back by its key ring (its master key file
  cannot open the key ring), or unable to reach the lease's database. The pair serves, on one leg.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
import urllib.error
import urllib.request
from typing import Any

from msc.config.load import Settings

READYZ_TIMEOUT_S = 2.0
#: ``msc status``'s exit status when a node is active but this machine's node could not take over
#: (newcomer8: exit 0 while the standby was held back by its key ring hid a pair that could not
#: fail over from a check on exit codes). Not 2: argparse's and msc's own "cannot start" status.
EXIT_CANNOT_FAIL_OVER = 3


def probe_address(bind: str) -> tuple[str, str]:
    """(host, port) that ``msc status`` asks for this machine's node at its ``[metrics] bind``: the
    bind itself, or 127.0.0.1 for a bind on every address."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return host, port


def readyz(bind: str) -> tuple[int, dict[str, Any]]:
    """(status, body) of this machine's node's ``GET /readyz`` at its ``[metrics] bind``; (0, {})
    when nothing answers there (not running — or paused: see :func:`silent_listener`)."""
    host, port = probe_address(bind)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=READYZ_TIMEOUT_S) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read())
        except ValueError:
            return e.code, {}
    except (OSError, ValueError):
        return 0, {}


def proc_address(hexaddr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``/proc/net/tcp{,6}``'s local address (without the port): 32-bit words in the host's byte
    order (``0100007F`` is 127.0.0.1 on a little-endian machine)."""
    raw = b"".join(int(hexaddr[i:i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(hexaddr), 8))
    return ipaddress.ip_address(raw)


def _reaches(listener: ipaddress.IPv4Address | ipaddress.IPv6Address,
             targets: set[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> bool:
    """Is a socket listening at ``listener`` the one a connection to any of ``targets`` reaches?
    Its own address, or every address (0.0.0.0; :: also for IPv4, unless IPV6_V6ONLY — which
    /proc does not show, and then nothing else could listen on that port's IPv4 side anyway)."""
    if isinstance(listener, ipaddress.IPv6Address) and listener.ipv4_mapped is not None:
        listener = listener.ipv4_mapped
    if listener in targets:
        return True
    if listener.is_unspecified:
        return any(t.version == listener.version or listener.version == 6 for t in targets)
    return False


def silent_listener(bind: str) -> tuple[bool, int | None]:
    """When ``/readyz`` did not answer: does a process still listen where it was asked (a node
    paused with SIGSTOP, or hung — the kernel accepts connections for it, nobody answers), and
    which (its PID, or None when this user may not see it)? (False, None): nothing listens —
    the node is not running. The listener must be the one a connection to :func:`probe_address`
    reaches — that address (or every address), not only that port: on one machine a pair's nodes
    may use the same port on 127.0.0.1 and 127.0.0.2, and the other node is not this one
    (newcomer9: the serving node was named "paused or hung?"). Linux's ``/proc/net/tcp{,6}`` and
    ``/proc/PID/fd`` (proc(5)); elsewhere (False, None)."""
    host, port_text = probe_address(bind)
    try:
        port = int(port_text)
        targets = {ipaddress.ip_address(str(info[4][0]).partition("%")[0])
                   for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except (ValueError, OSError, UnicodeError):  # no port, or a name that does not resolve
        return False, None
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)  # the header line
                for line in f:
                    cols = line.split()
                    if len(cols) <= 9 or cols[3] != "0A":  # st 0A is LISTEN; inode is the 10th column
                        continue
                    address, _, hexport = cols[1].rpartition(":")  # local_address HEXADDR:HEXPORT
                    try:
                        if int(hexport, 16) == port and _reaches(proc_address(address), targets):
                            inodes.add(f"socket:[{cols[9]}]")
                    except ValueError:
                        continue
        except OSError:
            continue
    if not inodes:
        return False, None
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # another user's process, or gone
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return True, int(pid)
            except OSError:
                continue
    return True, None


def lease_row(settings: Settings) -> tuple[Any, str | None]:
    """(the lease row or None, why it could not be read)."""
    from msc.ha.pglease import LeaseUnavailable
    from msc.ha.site import read_lease

    try:
        return read_lease(settings), None
    except (LeaseUnavailable, ValueError, OSError) as exc:
        return None, str(exc)


def nodes_alive(settings: Settings) -> list[dict[str, Any]] | None:
    """The pair's nodes that said they were alive (``msc_node_seen``) within the lease time —
    every running node says so every ``lease_ttl_s / 3`` —, or None when the database could not
    be asked. Asked only when no node is active: is any node running to take the lease?"""
    from msc.ha.pglease import LeaseUnavailable
    from msc.ha.site import read_nodes_alive

    node = settings.config.node
    assert node is not None
    try:
        seen = read_nodes_alive(settings, node.lease_ttl_s)
    except (LeaseUnavailable, ValueError, OSError):
        return None
    return [{"node": s.node, "host": s.host, "pid": s.pid, "seen_s_ago": round(s.ago_s, 1)} for s in seen]


def status(settings: Settings) -> tuple[int, dict[str, Any]]:
    """The exit status and what ``msc status`` reports."""
    node = settings.config.node
    code, body = readyz(settings.config.metrics.bind)
    here: dict[str, Any] = {"status": code,
                            "role": (body.get("node") or {}).get("role") or body.get("status") if code else None}
    if not code:
        listening, pid = silent_listener(settings.config.metrics.bind)
        here["process"] = "not answering" if listening else "not running"
        here["pid"] = pid
    if body.get("key_ring"):  # keyring.unusable on this machine (OPERATIONS.md "Metrics and health")
        here["key_ring"] = body["key_ring"]
    if (body.get("node") or {}).get("held_back"):  # it does not take the lease (the key ring)
        here["held_back"] = body["node"]["held_back"]
    if (body.get("node") or {}).get("lease_error"):  # it cannot reach the lease's database
        here["lease_error"] = body["node"]["lease_error"]
    if node is None:
        doc: dict[str, Any] = {"node": None, "this_node": here, "active": "this machine" if code == 200 else None}
        return (0 if code == 200 else 1), doc
    row, error = lease_row(settings)
    lease = None if row is None else {"holder": row.holder, "epoch": row.epoch, "live": row.live,
                                      "remaining_s": round(row.remaining_s, 1),
                                      "released": bool(getattr(row, "released", False)),
                                      "heard": bool(getattr(row, "heard", True))}
    active = row.holder if row is not None and row.live else None
    doc = {"node": node.name, "this_node": here, "lease": lease, "active": active}
    if error is not None:
        doc["lease_error"] = error
    why = not_serving(node.name, active, here, lease)
    if why is not None:
        # The lease is held but its holder does not serve (newcomer trial #3: exit 0 while this
        # machine's active node was SIGSTOPped): no node serves until it runs out.
        doc["active"] = None
        doc["not_serving"] = why
        return 1, doc
    if not active:
        if row is not None:  # expired: is a node running to take it? (newcomer trial F7)
            alive = nodes_alive(settings)
            if alive is not None and here.get("process") == "not running":
                # This machine's node is not running (nothing at its [metrics] bind): an alive mark
                # under its name is stale — a process that was killed, or seen just before it
                # stopped — and never counts it as running (newcomer trial F1).
                stale = [n for n in alive if n["node"] == node.name]
                alive = [n for n in alive if n["node"] != node.name]
                if stale:
                    doc["alive_stale"] = stale
            doc["alive"] = alive
        return 1, doc
    why = cannot_take_over(doc)
    if why is not None:
        doc["cannot_take_over"] = why
        return EXIT_CANNOT_FAIL_OVER, doc
    return 0, doc


def not_serving(name: str, holder: str | None, here: dict[str, Any], lease: dict[str, Any] | None) -> str | None:
    """Why the node holding a live lease is known not to serve, or None: it is this machine's node
    and its /readyz does not say active (not answering — paused or hung —, not running — a killed
    process's lease runs out —, or a standby: restarted while its previous process's lease runs
    out), or its node never said it knows it holds it (a take whose answer was lost: OPERATIONS.md
    "Epochs may skip a number")."""
    if holder is None or lease is None:
        return None
    if holder == name and here.get("role") != "active":
        if not here["status"]:
            return ("it does not answer (paused or hung?)" if here.get("process") == "not answering"
                    else "it is not running (a killed process's lease, running out unrenewed)")
        return f"it does not serve (/readyz {here['status']}: {here.get('role') or 'not serving'})"
    if not lease.get("heard", True):
        return "its node has not said it knows it holds it (a take whose answer was lost?)"
    return None


def cannot_take_over(doc: dict[str, Any]) -> str | None:
    """While another node is active: why this machine's node could not take over if it failed
    (:data:`EXIT_CANNOT_FAIL_OVER`), or None — it is the active node, or a standby that would."""
    here = doc["this_node"]
    if here.get("role") == "active" or doc.get("active") == doc.get("node"):
        return None
    if not here["status"]:
        return "it is not answering (paused or hung?)" if here.get("process") == "not answering" else "it is not running"
    if here.get("held_back") or here.get("key_ring"):
        return "its master key file cannot open the key ring (see the key ring line)"
    if here.get("lease_error"):
        return f"it cannot reach the lease's database ({here['lease_error']})"
    if here.get("role") != "standby":
        return f"it is not a standby (/readyz {here['status']}: {here.get('role') or 'not serving'})"
    return None


def render(doc: dict[str, Any]) -> list[str]:
    here = doc["this_node"]
    if here["status"]:
        state = f"{here['role'] or 'not serving'} (/readyz {here['status']})"
    elif here.get("process") == "not answering":
        who = f"process {here['pid']} exists" if here.get("pid") else "a process listens at its [metrics] bind"
        state = f"not answering ({who}; paused or hung?)"
    else:
        state = "not running (nothing answers at its [metrics] bind)"
    key_ring = [f"key ring: unusable on this machine — {here['key_ring']}"] if here.get("key_ring") else []
    if doc["node"] is None:
        return [f"single node (no [node] table) on this machine: {state}", *key_ring]
    lines = [f"node {doc['node']} (this machine): {state}", *key_ring]
    lease = doc.get("lease")
    # A node whose master key file cannot open the key ring does not take the lease (/readyz node.held_back).
    wont = f"node {doc['node']} (this machine) will not take it until its master key file opens the key ring " \
        "(see the key ring line)" if here.get("held_back") else None
    if doc.get("lease_error"):
        lines.append(f"active node: unknown — the lease's database could not be asked ({doc['lease_error']})")
    elif lease is None:
        lines.append("active node: none — no node has held the lease yet" + (f"; {wont}" if wont else ""))
    elif lease["live"] and doc.get("not_serving"):
        who = f"{lease['holder']} (this machine)" if lease["holder"] == doc["node"] else lease["holder"]
        lines.append(f"active node: none serving — {who} holds the lease (epoch {lease['epoch']}, valid "
                     f"{lease['remaining_s']:.1f} s more by the database's clock) but {doc['not_serving']}; "
                     "a standby takes it over when it runs out (exit 1)")
    elif lease["live"]:
        lines.append(f"active node: {lease['holder']} (lease epoch {lease['epoch']}, valid "
                     f"{lease['remaining_s']:.1f} s more by the database's clock)")
    elif lease.get("released"):  # given up (a clean stop): not "ran out" (newcomer trial F1)
        lines.append(f"active node: none — the lease (epoch {lease['epoch']}) was released by {lease['holder']} at "
                     f"its stop {-lease['remaining_s']:.1f} s ago; " + (wont or who_takes_it(doc)))
    else:
        lines.append(f"active node: none — the lease of {lease['holder']} (epoch {lease['epoch']}) ran out "
                     f"{-lease['remaining_s']:.1f} s ago; " + (wont or who_takes_it(doc)))
    for n in doc.get("alive_stale") or ():
        lines.append(f"node {n['node']} (this machine): its alive mark in the database (host {n['host']}, process "
                     f"{n['pid']}, seen {n['seen_s_ago']:.1f} s ago) is stale — it is not running")
    if wont and (doc.get("lease_error") or (lease is not None and lease["live"])):
        lines.append(f"node {doc['node']} (this machine) would not take over: its master key file cannot open the "
                     "key ring (see the key ring line)" + (
                         f" — the pair cannot fail over (exit {EXIT_CANNOT_FAIL_OVER})" if doc.get("cannot_take_over") else ""))
    elif doc.get("cannot_take_over"):
        lines.append(f"node {doc['node']} (this machine) could not take over if {doc['active']} failed: "
                     f"{doc['cannot_take_over']} — the pair cannot fail over (exit {EXIT_CANNOT_FAIL_OVER})")
    return lines


def who_takes_it(doc: dict[str, Any]) -> str:
    """Who takes an expired lease (newcomer trial F7: "a standby takes it at its next poll" with
    no node running): this machine's standby; else the nodes the database saw alive within the
    lease time (``alive``: their announcements); none seen — no node is running (or none reaches
    the database): the lease stays as it is until one starts."""
    here = doc["this_node"]
    if here["status"] and here.get("role") == "standby" and not here.get("lease_error"):
        return f"node {doc['node']} (this machine), a standby, takes it at its next poll"
    alive = doc.get("alive")
    if alive is None:
        return "a standby, if one runs, takes it at its next poll (the nodes alive could not be asked)"
    if not alive:
        return ("no node is running — none has said it is alive to the database within the lease time — "
                "and the lease stays as it is until one starts")
    names = ", ".join(f"{n['node']} (host {n['host']}, seen {n['seen_s_ago']:.1f} s ago)" for n in alive)
    return f"running: {names} — a standby takes it at its next poll"


def cmd_status(args, settings: Settings) -> int:
    rc, doc = status(settings)
    if args.format == "json":
        print(json.dumps(doc, sort_keys=True))
    else:
        print("\n".join(render(doc)))
    return rc
