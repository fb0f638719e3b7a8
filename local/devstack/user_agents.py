"""Real user-agent strings of each mail-client family, as they arrive on a tracking pixel, with the
`client-info` and bot verdict opentracking must derive from them. Test data for the read side."""

# (user agent, client-type, client-os, client-name, device-type, bot)
CASES = [
    (
        "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
        "email client",
        "Windows",
        "Outlook",
        "desktop",
        "",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0) Gecko/20100101 Thunderbird/115.6.0",
        "email client",
        "Windows",
        "Thunderbird",
        "desktop",
        "",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Mobile/15E148",
        "email client",
        "iOS",
        "Apple Mail",
        "mobile",
        "",
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Mobile/15E148",
        "email client",
        "iOS",
        "Apple Mail",
        "tablet",
        "",
    ),
    (
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
        "email client",
        "Windows",
        "Gmail image proxy",
        "desktop",
        "",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
        "Safari/537.36",
        "browser",
        "Windows",
        "Chrome",
        "desktop",
        "",
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.6099.144 Mobile Safari/537.36",
        "mobile browser",
        "Android",
        "Chrome Mobile",
        "mobile",
        "",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.2 Safari/605.1.15",
        "browser",
        "Mac OS X",
        "Safari",
        "desktop",
        "",
    ),
    ("Mozilla/5.0", "unknown", "unknown", "unknown", "unknown", "apple"),
    ("python-requests/2.31.0", "library", "unknown", "Python Requests", "unknown", "generic"),
]
