"""The Gradio layout of the local web page (app.py); the work itself is engine/webapp.py's :class:`Workbench`.

Two tabs: "Enhance" (photos x models -> before/after slider, side by side with each model's time per image, PNG
downloads) and "Synthesise a pair" (the physics synthesiser makes a low-light version of a normal photo; the models
enhance it and are scored against the photo). A hidden event is the API endpoint `enhance` (image file + model label
[+ heat] -> enhanced PNG) for gradio_client. User errors show as the CLIs' one-line `error: ...`, never a traceback.
"""
from __future__ import annotations

import os
from types import SimpleNamespace

# Before gradio is imported: no usage statistics or version checks leave the machine.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from data.image_io import IMAGE_EXTENSIONS, read_rgb  # noqa: E402
from utils.errors import UserError  # noqa: E402
from .webapp import DEFAULT_DTYPE, Workbench, auto_note, dtype_choices, error_line  # noqa: E402

FILE_TYPES = sorted(IMAGE_EXTENSIONS)


def _fmt(v, digits):
    return "n/a" if v is None else f"{v:.{digits}f}"


def _result_views(results):
    """(slider pair, gallery items, timing/metric rows, download paths) for a list of Results."""
    first = results[0]
    slider = (str(first.input_png), str(first.png))
    gallery = [(str(r.png), f"{r.label}: {r.name}.png ({r.seconds:.2f} s)") for r in results]
    rows = []
    for r in results:
        row = [r.label, r.name + ".png", round(r.seconds, 3)]
        if r.metrics is not None:
            row += [_fmt(r.metrics["psnr"], 3), _fmt(r.metrics["ssim"], 4), _fmt(r.metrics["lpips"], 4)]
        rows.append(row)
    return slider, gallery, rows, [str(r.png) for r in results]


def _per_model(results) -> str:
    """'label: mean s/image (n images)' for each model, for the status line."""
    by = {}
    for r in results:
        by.setdefault(r.label, []).append(r.seconds)
    return "; ".join(f"{lb}: {sum(s) / len(s):.2f} s/image ({len(s)} image{'s' * (len(s) > 1)})"
                     for lb, s in by.items())


def build_page(bench: Workbench) -> gr.Blocks:
    """The page's Blocks for a Workbench (launched by app.py; tests launch it too)."""
    labels = bench.labels
    with gr.Blocks(title="lowlight-flow", analytics_enabled=False) as page:
        gr.Markdown("## lowlight-flow: enhance your own photos\nOutputs are the PNGs `test.py` writes for the same "
                    "weights and settings (clamped, rounded to 8 bits).")
        enh = _enhance_tab(bench, labels)
        syn = _synthesis_tab(bench, labels)
        # the API endpoint: hidden components, one event named `enhance`
        api = SimpleNamespace(image=gr.File(visible=False, label="image"),
                              model=gr.Textbox(labels[0], visible=False, label="model"),
                              heat=gr.Number(None, visible=False, label="heat"),
                              out=gr.Image(type="filepath", format="png", visible=False, label="enhanced"),
                              button=gr.Button(visible=False))
        _wire_enhance(bench, enh)
        _wire_synthesis(bench, enh, syn)
        _wire_api(bench, labels, api)
    return page


def _enhance_tab(bench: Workbench, labels) -> SimpleNamespace:
    """The "Enhance" tab's components (its heat, tile and dtype fields serve the other tab too)."""
    heat0 = next((m.default_heat for m in bench.models.values() if m.uses_heat), 0.0)
    c = SimpleNamespace()
    with gr.Tab("Enhance"):
        with gr.Row():
            with gr.Column(scale=1):
                c.photos = gr.File(label="Photos", file_count="multiple", file_types=FILE_TYPES, elem_id="photos")
                c.models = gr.CheckboxGroup(labels, value=labels[:1], label="Models", elem_id="models")
                c.heat = gr.Slider(0.0, 2.0, value=heat0, step=0.05, label="Heat (flows only; 0 = deterministic)",
                                   elem_id="heat")
                c.tile = gr.Textbox("auto", label="Tile (px; auto = by memory; 0 = never)", elem_id="tile")
                c.dtype = gr.Dropdown(dtype_choices(bench.device()), value=DEFAULT_DTYPE,
                                      elem_id="dtype",
                                     label=f"dtype (default: each config's; auto here: {auto_note(bench.device())})")
                c.go = gr.Button("Enhance", variant="primary", elem_id="enhance-btn")
            with gr.Column(scale=2):
                c.status = gr.Markdown("", elem_id="status")
                c.slider = gr.ImageSlider(label="Before / after (first image, first model)", type="filepath",
                                          elem_id="slider")
                c.gallery = gr.Gallery(label="Side by side", elem_id="gallery", columns=3, height=320,
                                       object_fit="contain")
                c.times = gr.Dataframe(headers=["model", "result", "seconds"], label="Time per image",
                                       elem_id="times", interactive=False)
                c.downloads = gr.File(label="Download (PNG)", file_count="multiple", elem_id="downloads",
                                      interactive=False)
    return c


def _synthesis_tab(bench: Workbench, labels) -> SimpleNamespace:
    """The "Synthesise a pair" tab's components."""
    c = SimpleNamespace()
    with gr.Tab("Synthesise a pair"):
        with gr.Row():
            with gr.Column(scale=1):
                c.normal = gr.File(label="Normal-light photo", file_types=FILE_TYPES, elem_id="normal")
                c.seed = gr.Number(0, precision=0, minimum=0, label="Seed", elem_id="seed")
                c.make = gr.Button("Make a low-light version", elem_id="synth-btn")
                c.models = gr.CheckboxGroup(labels, value=labels[:1], label="Models", elem_id="s-models")
                c.go = gr.Button("Enhance and score", variant="primary", elem_id="score-btn")
            with gr.Column(scale=2):
                c.status = gr.Markdown("", elem_id="s-status")
                c.params = gr.JSON(label=f"Physics parameters (drawn from {bench.physics_conf.name})",
                                   elem_id="params")
                c.pair = gr.ImageSlider(label="Low-light / normal", type="filepath", elem_id="pair")
                c.gallery = gr.Gallery(label="Enhanced", elem_id="s-gallery", columns=3, height=320,
                                       object_fit="contain")
                c.scores = gr.Dataframe(headers=["model", "result", "seconds", "PSNR", "SSIM", "LPIPS"],
                                        label="Against the normal photo", elem_id="scores", interactive=False)
                c.low_file = gr.File(label="Low-light PNG", elem_id="low-file", interactive=False)
        c.pair_state = gr.State(None)
    return c


def _wire_enhance(bench: Workbench, enh: SimpleNamespace) -> None:
    def on_enhance(paths, chosen, h, t, dt):
        try:
            results = bench.enhance(paths, chosen, h, t, dt)
        except UserError as e:
            return error_line(e), None, [], [], None
        s, g, rows, files = _result_views(results)
        return f"done: {_per_model(results)}", s, g, rows, files

    enh.go.click(on_enhance, [enh.photos, enh.models, enh.heat, enh.tile, enh.dtype],
                 [enh.status, enh.slider, enh.gallery, enh.times, enh.downloads],
                 api_visibility="undocumented", concurrency_limit=1)


def _wire_synthesis(bench: Workbench, enh: SimpleNamespace, syn: SimpleNamespace) -> None:
    def on_synth(path, sd):
        try:
            normal_png, low_png, p = bench.synthesise(path, sd)
        except UserError as e:
            return error_line(e), None, None, None, None
        note = f"seed {int(sd)}: exposure {p.exposure:.4g}, shot noise {p.shot_noise:.3g}, read noise " \
               f"{p.read_noise:.3g}"
        return note, {"seed": int(sd), **p.as_dict()}, (str(low_png), str(normal_png)), str(low_png), \
            (str(normal_png), str(low_png))

    syn.make.click(on_synth, [syn.normal, syn.seed], [syn.status, syn.params, syn.pair, syn.low_file, syn.pair_state],
                   api_visibility="undocumented", concurrency_limit=1)

    def on_score(state, chosen, h, t, dt):
        if not state:
            return "error: no pair yet: make a low-light version first", [], []
        normal_png, low_png = state
        try:
            results = bench.enhance([low_png], chosen, h, t, dt, gt=read_rgb(normal_png))
        except UserError as e:
            return error_line(e), [], []
        _, g, rows, _ = _result_views(results)
        note = next((r.metrics["lpips_note"] for r in results if r.metrics and r.metrics.get("lpips_note")), "")
        return f"done: {_per_model(results)}" + (f"\n\nLPIPS n/a: {note}" if note else ""), g, rows

    syn.go.click(on_score, [syn.pair_state, syn.models, enh.heat, enh.tile, enh.dtype],
                 [syn.status, syn.gallery, syn.scores], api_visibility="undocumented", concurrency_limit=1)


def _wire_api(bench: Workbench, labels, api: SimpleNamespace) -> None:
    def api_enhance(path, label, h):
        """Enhance one image with the model `label` (heat: None = the config's); returns the PNG test.py
        writes."""
        try:
            return str(bench.enhance([path], [label or labels[0]], h)[0].png)
        except UserError as e:
            raise gr.Error(error_line(e), print_exception=False) from None

    api.button.click(api_enhance, [api.image, api.model, api.heat], api.out, api_name="enhance",
                     concurrency_limit=1)
