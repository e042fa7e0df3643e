"""The array libraries xbackprop knows, one :class:`~xbackprop.backends.base.Backend` record each, in a module
of its own; :data:`xbackprop.backend.RECORDS` lists them. A new library is its module here and one line there.
"""
