"""Origins a page must not open `/ws` from with the user's cookie, for a server that the user's
own page reached as http://127.0.0.1:<port> (issue 10 item 1). Shared by the unit tests of the
policy and the end-to-end check against a live server."""

from __future__ import annotations


def hostile_origins(port: int) -> list[str]:
    """The seven the attack of 2026-12-01 got in with first, then the rest."""
    return [
        "http://127.0.0.1:9999",  # another port of the same host (SameSite=Lax sends the cookie)
        f"https://127.0.0.1:{port}",  # another scheme
        f"http://localhost:{port + 1}",  # another name and port
        "http://127.0.0.1",  # default port 80
        "https://localhost",
        f"http://localhost.:{port}",  # trailing dot: another origin to a browser
        f"http://LOCALHOST:{port}",  # another host than 127.0.0.1, whatever the case
        f"http://localhost:{port}",  # same machine, another origin
        "https://evil.example",
        f"http://evil.example:{port}",
        "null",  # sandboxed iframes, file: pages, some redirects
        "file://",
        "file:///tmp/page.html",
        f"http://127.0.0.1:{port}@evil.com",  # userinfo: the host is evil.com
        f"http://user:pass@127.0.0.1:{port}",
        f"http://127.0.0.1.evil.com:{port}",  # suffix
        f"http://127.0.0.1:{port}.evil.com",
        f"http://evil.com#@127.0.0.1:{port}",
        f"http://127.0.0.1:0{port}",  # leading zero: not how a browser serialises a port
        f"http://127.0.0.1:{port + 65536}",  # the same port modulo 2**16
        f"http://127.0.0.1:+{port}",
        f"http://[::1]:{port}",  # IPv6 loopback: same machine, another origin
        f"http://[::ffff:127.0.0.1]:{port}",
        f"http://127.0.0.2:{port}",
        f"http://127.1:{port}",  # short form of 127.0.0.1 in URL parsers
        f"http://2130706433:{port}",  # decimal 127.0.0.1
        f"http://0x7f000001:{port}",  # hexadecimal 127.0.0.1
        f"http://127\u30020\u30020\u30021:{port}",  # ideographic full stops
        f"http://l\u043ecalhost:{port}",  # IDN: Cyrillic o, raw
        f"http://xn--lcalhost-9fh:{port}",  # the same in punycode
        f"ws://127.0.0.1:{port}",
        f"wss://127.0.0.1:{port}",
        "chrome-extension://abcdefghijklmnopabcdefghijklmnop",
        f"http://127.0.0.1:{port}/",  # a URL, not an origin
        f"http://127.0.0.1:{port}/ws",
        f"http://127.0.0.1:{port}, http://127.0.0.1:{port}",
        "",
    ]
