"""The channel registry: per channel, how its provider adapter is built, what a send carries, what feedback means.

One module per channel (``email``, ``sms``, ``whatsapp``, ``app_push``, ``web_push``, ``print``) supplies a
:class:`~app.channels.base.ChannelSpec`; :mod:`app.channels.registry` lists them. The dispatcher asks the registry
and knows no channel by name: adding a channel is one module here and one line in the registry.
"""
