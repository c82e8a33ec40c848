"""asyncio's ``SSLProtocol`` with its record path in Rust.

The classes here are asyncio's own (``asyncio.sslproto`` of the running
Python) with native methods (``src/transports/sslproto*.rs``) in place of
asyncio's ``SSLProtocol.get_buffer`` and ``buffer_updated`` (ciphertext from
the socket to the application protocol; a native first base, which also
holds the attributes those paths use) and ``_SSLProtocolTransport.write``
and ``writelines`` (application data to the socket; installed on the class,
whose ``__slots__`` rule out a native base). They run asyncio's steps on the
same attributes and hand every state they do not handle (handshake,
shutdown, flow-control transitions, errors) to asyncio's methods, so the
handshake, certificate checks, timeouts and error reports are asyncio's
code.

Both classes keep asyncio's names and module, so reprs and log lines read
as asyncio's.
"""

from __future__ import annotations

from asyncio import sslproto

from . import _ferroloop


class _SSLProtocolTransport(sslproto._SSLProtocolTransport):
    pass


_ferroloop._install_ssl_write(_SSLProtocolTransport)


_ferroloop._install_ssl_protocol(_SSLProtocolTransport)


class SSLProtocol(_ferroloop._SSLRecordPath, sslproto.SSLProtocol):
    __init__ = _ferroloop._SSLRecordPath._native_init


for _cls, _base in ((_SSLProtocolTransport, sslproto._SSLProtocolTransport), (SSLProtocol, sslproto.SSLProtocol)):
    _cls.__module__ = _base.__module__
    _cls.__qualname__ = _base.__qualname__
    _cls.__doc__ = _base.__doc__
