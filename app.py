"""A local web page to enhance your own photos with one or more trained models (Gradio; optional extra).

python app.py --opt CONF [--model_path CKPT] [--set k=v ...] [--opt CONF2 [--model_path CKPT2] ...] [--port N]
              [--host H] [--device D] [--synthesis PHYSICS_YML] [--lpips-backbone PTH]
Needs `pip install -r requirements-app.txt`. Binds 127.0.0.1 unless --host says otherwise; fetches nothing.
Each --model_path and --set belongs to the --opt before it (default checkpoint: that config's model_path).
docs/app.md has the details.
"""
import argparse
import logging
import os
import socket

from utils.cli import run_cli
from utils.errors import OptionError, UserError
from utils.logging_setup import setup_cli_logging


class _Model(argparse.Action):
    """--opt starts a [conf, checkpoint, overrides] entry; --model_path and --set after it belong to it (a --set
    before the first --opt applies to every model)."""

    def __call__(self, parser, namespace, value, option_string=None):
        specs = getattr(namespace, "models", None) or []
        if option_string == "--opt":
            specs.append([value, None, []])
        elif option_string == "--set":
            (specs[-1][2] if specs else namespace.overrides).append(value)
        elif not specs or specs[-1][1] is not None:
            raise OptionError("--model_path: give it after the --opt it belongs to (one --model_path per --opt)")
        else:
            specs[-1][1] = value
        namespace.models = specs


def _check_port(host: str, port: int) -> None:
    """An OptionError naming --port/--host when the address cannot be bound (in use, not this machine's)."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        raise OptionError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e}); pick another "
                          f"--port") from None


def parse_args(argv=None) -> argparse.Namespace:
    """The command line: `models` is [[conf, checkpoint or None, [its --set values]], ...], `overrides` the --set
    values given before the first --opt."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--opt", action=_Model, required=True, help="YAML config of a model (repeatable)")
    ap.add_argument("--model_path", action=_Model, help="checkpoint of the --opt before it")
    ap.add_argument("--set", action=_Model, metavar="KEY=VALUE",
                    help="override a config value of the --opt before it (before any --opt: of every model)")
    ap.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ap.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: auto)")
    ap.add_argument("--synthesis", help="physics synthesiser config (default confs/synthesis/physics_LOL.yml)")
    ap.add_argument("--lpips-backbone", help="AlexNet features .pth for LPIPS on the pair tab (never downloaded)")
    ap.set_defaults(models=None, overrides=[])
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    setup_cli_logging()
    if not 0 < args.port < 65536:
        raise OptionError(f"--port: {args.port} is not a port number (1-65535)")
    _check_port(args.host, args.port)     # before the (slow) model loading
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("lowlight_flow").warning("--host %s: the page is reachable from other machines", args.host)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError("app.py needs the optional web extra: pip install -r requirements-app.txt") from None
    from engine.webapp import Workbench, load_models
    from engine.webpage import build_page
    bench = Workbench(load_models(args.models, args.overrides, args.device), args.synthesis, args.lpips_backbone)
    try:
        build_page(bench).queue().launch(server_name=args.host, server_port=args.port, share=False,
                                         allowed_paths=[str(bench.scratch)], inbrowser=False)
    finally:
        bench.close()


if __name__ == "__main__":
    run_cli(main)
