"""The floor every other package stands on: settings, errors, shared names, small helpers.

It imports no other project package (``make lint`` checks this), so anything
may import it and nothing here can pull a layer above into a process.
"""
