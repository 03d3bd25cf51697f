"""Traffic for the API, sent from outside it: real 2013 flights as requests, replayed over HTTP.

These are clients of the server, not part of it: ``lab api-demo``, ``lab replay``,
the benches and the tests send them; the ``serving`` package never imports them.
"""
