"""`orch clusters`: Ray clusters jobs can train on (add, list, check, remove)."""

from typing import Annotated, Any

import typer

from ..errors import UsageError
from . import app, list_checked, project_here, refuse_if_held

clusters_app = typer.Typer(
    help="Ray clusters to train on (a lab's or a team's). orch starts its workers there "
         "as Ray jobs; jobs go there with --on ray:NAME, or by placement with --on auto.",
    no_args_is_help=True)
app.add_typer(clusters_app, name="clusters")


def _clusters() -> Any:
    from ..clusters import Clusters

    return Clusters(project_here(create=True).state_dir)


@clusters_app.command("add")
def clusters_add(
    name: Annotated[str, typer.Argument(help="A short name: jobs use --on ray:NAME.")],
    address: Annotated[str, typer.Argument(
        help="Ray's job submission address, http://HEAD:8265 (through an SSH tunnel: "
             "http://127.0.0.1:8265).")],
    hub: Annotated[str, typer.Option(
        "--hub", help="The workers' hub: folder:/PATH, a folder this machine and every "
                      "Ray node mount at that same path (NFS, sshfs…); or ssh:HOST, the "
                      "hub of an SSH host of `orch hosts add` (the head node), read over "
                      "SFTP, whose folder every node sees.")],
    python: Annotated[str, typer.Option(
        "--python", help="The cluster's Python (3.11+, with TensorFlow) that runs "
                         "workers, as the nodes' PATH finds it.")] = "python",
    max_workers: Annotated[int, typer.Option(
        "--max-workers", help="orch workers on the cluster at once (each takes one CPU, "
                              "or one GPU for --gpu jobs).", min=1, max=1000)] = 4,
    replace: Annotated[bool, typer.Option("--replace", help="Replace a cluster of that "
                                                            "name.")] = False,
) -> None:
    """Add a Ray cluster. Nothing is sent to it yet: `orch clusters check NAME` connects."""
    from ..clusters import Cluster, check_address, check_name, parse_hub

    clusters = _clusters()
    cluster = Cluster(name=check_name(name.lower()), address=check_address(address),
                      hub=parse_hub(hub), python=python, max_workers=max_workers)
    if cluster.via_host is not None:
        from ..hosts import Hosts

        host = Hosts(clusters.state_dir).get(cluster.via_host)
        where = (f"the hub of SSH host {host.name} (its folder {host.workdir}/hub, over "
                 "SFTP), which every Ray node must see at that same path")
    elif not cluster.hub_path.parent.is_dir():
        raise UsageError(f"--hub {hub}: {cluster.hub_path.parent} is not a folder here; "
                         "mount the shared folder first")
    else:
        where = (f"the hub folder {cluster.hub_path}, which every Ray node must see at "
                 "that same path")
    clusters.add(cluster, replace=replace)
    print(f"added Ray cluster {cluster.name} ({cluster.address}); its workers will use "
          f"{where}. Check it with `orch clusters check {cluster.name}`")


@clusters_app.command("list")
def clusters_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The clusters, and what their last check found."""
    list_checked(_clusters(), as_json, "no Ray clusters yet: add one with `orch clusters "
                 "add NAME http://HEAD:8265 --hub folder:/shared/path`",
                 lambda c: f"{c.name:12s} {c.address:28s}", _ok)


def _ok(status: Any) -> str:
    return (f"Ray {status.ray_version}, {status.nodes} node(s), CPUs {status.cpus_free:g}/"
            f"{status.cpus:g} free, GPUs {status.gpus_free:g}/{status.gpus:g} free, workers "
            f"start in ~{status.startup:.0f} s")


@clusters_app.command("check")
def clusters_check(name: Annotated[str, typer.Argument(help="The cluster's name.")]) -> None:
    """Reach a cluster: its Ray version, nodes, free CPUs and GPUs, and its hub.

    A shared-folder hub is made, with the project's key beside it; an SSH host's hub
    is checked by probing the host.
    """
    from ..identity import load_identity
    from ..places.ray import RayPlace, write_key
    from ..raylink import ClusterError

    clusters = _clusters()
    project = project_here()
    cluster = clusters.get(name.lower())
    place = RayPlace(project, cluster)
    try:
        if cluster.via_host is None:
            write_key(cluster, load_identity(project.state_dir).key)
        else:
            _check_host(project, cluster.via_host)
        status = place.check()
    except (ClusterError, UsageError) as exc:  # kept for `clusters list` and `submit`
        clusters.note_problem(cluster.name, str(exc))
        raise
    print(f"cluster {cluster.name}: Ray {status.ray_version} at {cluster.address}")
    print(f"  nodes   {status.nodes}")
    print(f"  cpus    {status.cpus_free:g} free of {status.cpus:g}")
    print(f"  gpus    {status.gpus_free:g} free of {status.gpus:g}")
    hub_dir = place.paths()[0]
    how = "a shared folder" if cluster.via_host is None else \
        f"SSH host {cluster.via_host}'s hub, over SFTP"
    print(f"  hub     {hub_dir} ({how}: every node must see it at this path)")
    print(f"  python  {cluster.python} (on the nodes), up to {cluster.max_workers} workers")
    print(f"cluster {cluster.name} is ready: jobs go there with --on ray:{cluster.name} or "
          "--on auto")


def _check_host(project: Any, name: str) -> None:
    """Probe the SSH host whose hub a cluster uses (as `orch hosts check` does)."""
    from ..hosts import Hosts
    from ..places.ssh import probe
    from ..ssh import HostError, HostLink

    hosts = Hosts(project.state_dir)
    link = HostLink(hosts.get(name), hosts.known_hosts)
    try:
        status = probe(link, project.settings.host_min_free_mb)
    except HostError as exc:
        hosts.note_problem(name, str(exc))
        raise UsageError(f"the cluster's hub: {exc}") from None
    finally:
        link.close()
    hosts.save_status(status)
    if status.problem:
        raise UsageError(f"the cluster's hub: {status.problem}")


@clusters_app.command("remove")
def clusters_remove(
    name: Annotated[str, typer.Argument(help="The cluster's name.")],
    force: Annotated[bool, typer.Option(
        "--force", help="Remove it even though jobs still need it.")] = False,
) -> None:
    """Forget a cluster, unless jobs need it (its hub folder is left as it is)."""
    clusters = _clusters()
    cluster = clusters.get(name.lower())
    if not force:
        refuse_if_held(f"ray:{cluster.name}", f"cluster {cluster.name}")
    clusters.remove(cluster.name)
    hub = (f"its hub on host {cluster.via_host}" if cluster.via_host
           else f"its hub folder {cluster.hub_path}")
    print(f"removed Ray cluster {cluster.name}; {hub} was left as it is")
