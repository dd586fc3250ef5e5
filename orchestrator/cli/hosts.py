"""`orch hosts`: the SSH hosts jobs can train on (add, list, check, trust, remove)."""

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import UsageError
from . import app, list_checked, project_here, refuse_if_held

hosts_app = typer.Typer(
    help="SSH hosts to train on (a lab machine, a rented GPU box). Jobs go there with "
         "--on ssh:NAME, or by placement with --on auto.", no_args_is_help=True)
app.add_typer(hosts_app, name="hosts")


def _hosts() -> Any:
    from ..hosts import Hosts

    return Hosts(project_here(create=True).state_dir)


@hosts_app.command("add")
def hosts_add(
    name: Annotated[str, typer.Argument(help="A short name: jobs use --on ssh:NAME.")],
    destination: Annotated[str, typer.Argument(
        help="user@address or user@address:port (user defaults to yours).")],
    key: Annotated[Optional[Path], typer.Option(
        "--key", help="Private key to sign in with (referenced, never copied). Default: "
                      "your SSH agent and ~/.ssh keys.")] = None,
    python: Annotated[str, typer.Option(
        "--python", help="The host's Python (3.11+, with TensorFlow) that runs workers.")]
    = "python3",
    workdir: Annotated[str, typer.Option(
        "--workdir", help="orch's private folder on the host (its hub, installed orch, "
                          "scratch, logs); relative to the login folder unless absolute.")]
    = "",
    replace: Annotated[bool, typer.Option("--replace", help="Replace a host of that name.")]
    = False,
) -> None:
    """Add an SSH host. Nothing is sent to it yet: `orch hosts check NAME` connects."""
    import getpass

    from ..hosts import Host, check_name, parse_destination

    hosts = _hosts()
    user, address, port = parse_destination(destination, getpass.getuser())
    key_path = None
    if key is not None:
        key_path = key.expanduser().resolve()
        if not key_path.is_file():
            raise UsageError(f"--key {key}: no such file")
        if key_path.suffix == ".pub":
            raise UsageError(f"--key {key}: that is a public key; give the private one")
    from ..identity import load_identity

    project_id = load_identity(hosts.state_dir).project_id
    host = Host(name=check_name(name.lower()), user=user, address=address, port=port,
                key=str(key_path) if key_path else None, python=python,
                workdir=workdir or f".orch-host/{project_id}")
    hosts.add(host, replace=replace)
    print(f"added host {host.name} ({host.destination}); check it with "
          f"`orch hosts check {host.name}`")


@hosts_app.command("list")
def hosts_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The hosts, and what their last check found."""
    list_checked(_hosts(), as_json, "no SSH hosts yet: add one with `orch hosts add NAME "
                 "user@address`", lambda h: f"{h.name:12s} {h.destination:28s}", _ok)


def _ok(status: Any) -> str:
    gpus = ", ".join(f"GPU {g.index} {g.name}" for g in status.gpus) or "no GPU"
    free = f", {status.free_mb / 1024:.1f} GB free" if status.free_mb is not None else ""
    return f"Python {status.python}, TensorFlow {status.tensorflow}, {gpus}{free}"


@hosts_app.command("check")
def hosts_check(name: Annotated[str, typer.Argument(help="The host's name.")]) -> None:
    """Connect to a host and report its Python, TensorFlow, GPUs and free disk."""
    from ..places.ssh import probe
    from ..ssh import HostError, HostLink

    hosts = _hosts()
    project = project_here()
    host = hosts.get(name.lower())
    link = HostLink(host, hosts.known_hosts)
    try:
        status = probe(link, project.settings.host_min_free_mb)
    except HostError as exc:  # kept for `orch hosts list` and `orch submit`'s warning
        hosts.note_problem(host.name, str(exc))
        raise
    finally:
        link.close()
    hosts.save_status(status)
    if status.home:
        print(f"host {host.name}: connected to {host.destination}")
        print(f"  python      {host.python} ({status.python})")
        print(f"  tensorflow  {status.tensorflow or 'not installed'}")
        for g in status.gpus:
            memory = f", {g.memory_mb:.0f} MB" if g.memory_mb else ""
            print(f"  gpu {g.index}       {g.name}{memory}")
        if not status.gpus:
            print("  gpus        none (nvidia-smi found nothing): jobs run on its CPU")
        if status.free_mb is not None:
            print(f"  free disk   {status.free_mb / 1024:.1f} GB in {status.home}")
    if status.problem:
        raise UsageError(status.problem)
    print(f"host {host.name} is ready: jobs go there with --on ssh:{host.name} or --on auto")


@hosts_app.command("trust")
def hosts_trust(
    name: Annotated[str, typer.Argument(help="The host's name.")],
    fingerprint: Annotated[str, typer.Option(
        "--fingerprint", help="The key's SHA256:… fingerprint, as the refusal printed it "
                              "(compare it with the host's own `ssh-keygen -lf`).")],
) -> None:
    """Accept a host's key into .orch/known_hosts, if it has that fingerprint."""
    from ..ssh import fetch_host_key
    from ..ssh import fingerprint as fingerprint_of

    hosts = _hosts()
    host = hosts.get(name.lower())
    key = fetch_host_key(host)
    found = fingerprint_of(key)
    if found != fingerprint.strip():
        raise UsageError(f"host {host.name} presents {key.get_name()} {found}, not "
                         f"{fingerprint.strip()}: nothing was trusted")
    hosts.trust(host, key.get_name(), key.get_base64())
    print(f"trusted {key.get_name()} {found} for host {host.name} (in {hosts.known_hosts})")


@hosts_app.command("remove")
def hosts_remove(
    name: Annotated[str, typer.Argument(help="The host's name.")],
    force: Annotated[bool, typer.Option(
        "--force", help="Remove it even though jobs still need it (they wait for a host "
                        "of that name).")] = False,
) -> None:
    """Forget a host, unless jobs need it (its folder on the host is left as it is).

    Refused while jobs are queued for the host, run there, or wait there to be pulled.
    """
    hosts = _hosts()
    host = hosts.get(name.lower())
    if not force:
        refuse_if_held(f"ssh:{host.name}", f"host {host.name}")
    hosts.remove(host.name)
    print(f"removed host {host.name} ({host.destination}); orch's folder on it "
          f"({host.workdir}) was left as it is")
