"""The Gradio layout of the local web page (app.py); the work itself is engine/webapp.py's :class:`Workbench`.

Two tabs: "Enhance" (photos x models -> before/after slider, side by side with each model's time per image, PNG
downloads) and "Synthesise a pair" (the physics synthesiser makes a low-light version of a normal photo; the models
enhance it and are scored against the photo). A hidden event is the API endpoint `enhance` (image file + model label
[+ heat] -> enhanced PNG) for gradio_client. User errors show as the CLIs' one-line `error: ...`, never a traceback.
"""
from __future__ import annotations

import os

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
    dtypes = dtype_choices(bench.device())
    heat0 = next((m.default_heat for m in bench.models.values() if m.uses_heat), 0.0)

    with gr.Blocks(title="lowlight-flow", analytics_enabled=False) as page:
        gr.Markdown("## lowlight-flow: enhance your own photos\nOutputs are the PNGs `test.py` writes for the same "
                    "weights and settings (clamped, rounded to 8 bits).")
        with gr.Tab("Enhance"):
            with gr.Row():
                with gr.Column(scale=1):
                    photos = gr.File(label="Photos", file_count="multiple", file_types=FILE_TYPES,
                                     elem_id="photos")
                    models = gr.CheckboxGroup(labels, value=labels[:1], label="Models", elem_id="models")
                    heat = gr.Slider(0.0, 2.0, value=heat0, step=0.05, label="Heat (flows only; 0 = deterministic)",
                                     elem_id="heat")
                    tile = gr.Textbox("auto", label="Tile (px; auto = by memory; 0 = never)", elem_id="tile")
                    dtype = gr.Dropdown(dtypes, value=DEFAULT_DTYPE, elem_id="dtype",
                                        label=f"dtype (default: each config's; auto here: {auto_note(bench.device())})")
                    go = gr.Button("Enhance", variant="primary", elem_id="enhance-btn")
                with gr.Column(scale=2):
                    status = gr.Markdown("", elem_id="status")
                    slider = gr.ImageSlider(label="Before / after (first image, first model)", type="filepath",
                                            elem_id="slider")
                    gallery = gr.Gallery(label="Side by side", elem_id="gallery", columns=3, height=320,
                                         object_fit="contain")
                    times = gr.Dataframe(headers=["model", "result", "seconds"], label="Time per image",
                                         elem_id="times", interactive=False)
                    downloads = gr.File(label="Download (PNG)", file_count="multiple", elem_id="downloads",
                                        interactive=False)

        with gr.Tab("Synthesise a pair"):
            with gr.Row():
                with gr.Column(scale=1):
                    normal = gr.File(label="Normal-light photo", file_types=FILE_TYPES, elem_id="normal")
                    seed = gr.Number(0, precision=0, minimum=0, label="Seed", elem_id="seed")
                    make = gr.Button("Make a low-light version", elem_id="synth-btn")
                    s_models = gr.CheckboxGroup(labels, value=labels[:1], label="Models", elem_id="s-models")
                    s_go = gr.Button("Enhance and score", variant="primary", elem_id="score-btn")
                with gr.Column(scale=2):
                    s_status = gr.Markdown("", elem_id="s-status")
                    params = gr.JSON(label=f"Physics parameters (drawn from {bench.physics_conf.name})",
                                     elem_id="params")
                    pair = gr.ImageSlider(label="Low-light / normal", type="filepath", elem_id="pair")
                    s_gallery = gr.Gallery(label="Enhanced", elem_id="s-gallery", columns=3, height=320,
                                           object_fit="contain")
                    scores = gr.Dataframe(headers=["model", "result", "seconds", "PSNR", "SSIM", "LPIPS"],
                                          label="Against the normal photo", elem_id="scores", interactive=False)
                    low_file = gr.File(label="Low-light PNG", elem_id="low-file", interactive=False)
            pair_state = gr.State(None)

        # the API endpoint: hidden components, one event named `enhance`
        api_image = gr.File(visible=False, label="image")
        api_model = gr.Textbox(labels[0], visible=False, label="model")
        api_heat = gr.Number(None, visible=False, label="heat")
        api_out = gr.Image(type="filepath", format="png", visible=False, label="enhanced")
        api_button = gr.Button(visible=False)

        def on_enhance(paths, chosen, h, t, dt):
            try:
                results = bench.enhance(paths, chosen, h, t, dt)
            except UserError as e:
                return error_line(e), None, [], [], None
            s, g, rows, files = _result_views(results)
            return f"done: {_per_model(results)}", s, g, rows, files

        go.click(on_enhance, [photos, models, heat, tile, dtype], [status, slider, gallery, times, downloads],
                 api_visibility="undocumented", concurrency_limit=1)

        def on_synth(path, sd):
            try:
                normal_png, low_png, p = bench.synthesise(path, sd)
            except UserError as e:
                return error_line(e), None, None, None, None
            note = f"seed {int(sd)}: exposure {p.exposure:.4g}, shot noise {p.shot_noise:.3g}, read noise " \
                   f"{p.read_noise:.3g}"
            return note, {"seed": int(sd), **p.as_dict()}, (str(low_png), str(normal_png)), str(low_png), \
                (str(normal_png), str(low_png))

        make.click(on_synth, [normal, seed], [s_status, params, pair, low_file, pair_state],
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

        s_go.click(on_score, [pair_state, s_models, heat, tile, dtype], [s_status, s_gallery, scores],
                   api_visibility="undocumented", concurrency_limit=1)

        def api_enhance(path, label, h):
            """Enhance one image with the model `label` (heat: None = the config's); returns the PNG test.py
            writes."""
            try:
                return str(bench.enhance([path], [label or labels[0]], h)[0].png)
            except UserError as e:
                raise gr.Error(error_line(e), print_exception=False) from None

        api_button.click(api_enhance, [api_image, api_model, api_heat], api_out, api_name="enhance",
                         concurrency_limit=1)
    return page
