"""``persona keys``: API keys of the HTTP service."""

from __future__ import annotations

import click

from . import cli
from .common import echo_json, get_store


def _keyring():  # type: ignore[no-untyped-def]
    from ..service.auth import KeyRing

    return KeyRing(get_store())


@cli.group()
def keys() -> None:
    """Create, list and revoke API keys of `persona serve`."""


@keys.command("create")
@click.option(
    "--tenant",
    default="",
    help="Tenant of the key: its users are invisible to other tenants' keys.",
)
@click.option("--name", default="", help="A note saying what the key is for.")
def keys_create(tenant: str, name: str) -> None:
    """Create a key and print it (it is shown only once; only its hash is stored)."""
    key_id, key = _keyring().create(tenant=tenant, name=name)
    click.echo(key)
    click.echo(
        f"key id {key_id}" + (f", tenant {tenant!r}" if tenant else ", default tenant"), err=True
    )


@keys.command("list")
def keys_list() -> None:
    """List keys (ids, tenants, names; never the keys)."""
    echo_json(_keyring().list())


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke the key with id KEY_ID (the 8 characters after 'pe_')."""
    _keyring().revoke(key_id)
    click.echo(f"revoked {key_id}")
