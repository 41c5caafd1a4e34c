"""The web app's page (``jointdiff serve``): Gradio wiring for JeDi personalised generation (sec. 3.3) and DreamBlend.

The model runs in :class:`~jointdiff.app.services.JeDiService` / ``BlendService``, which know nothing
of Gradio (the tests call them directly); :func:`build_app` wires them to the page. All model events
share one queue slot (``concurrency_id="model"``, limit 1), so two users never run the model at once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from jointdiff.app.files import IMAGE_FORMATS, MAX_PROMPTS, MAX_REFERENCES, MAX_SIDE, MAX_STEPS, MAX_UPLOAD_MB
from jointdiff.app.services import BlendService, JeDiService, Outcome
from jointdiff.jedi.guidance import DEFAULT, STRATEGIES

if TYPE_CHECKING:
    import gradio as gr

GUIDANCE_CHOICES = [(s.label, name) for name, s in STRATEGIES.items()]  # every strategy, as the page names it


LIMITS = (
    f"Up to {MAX_REFERENCES} references ({', '.join(IMAGE_FORMATS)}; at most {MAX_UPLOAD_MB} MB and "
    f"{MAX_SIDE} px per side), up to {MAX_PROMPTS} prompts, one run at a time."
)


def build_app(jedi: JeDiService, blend: BlendService) -> gr.Blocks:
    """The two-tab page: JeDi (references + prompts -> gallery and downloads) and DreamBlend."""
    import gradio as gr

    with gr.Blocks(title="jointdiff", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        scope = f"\n\n{jedi.scope}" if jedi.scope else ""
        gr.Markdown(
            f"## jointdiff: personalised generation\nModel: `{jedi.model_name}`. {LIMITS}{scope}", elem_id="about"
        )
        with gr.Tab("JeDi", id="jedi"), gr.Row():
            _jedi_tab(gr, jedi)
        with gr.Tab("DreamBlend", id="dreamblend"):
            if blend.unavailable:
                gr.Markdown(
                    f"**{blend.unavailable}** Install a jointdiff with `jointdiff.dreamblend.blend`.",
                    elem_id="blend-off",
                )
            elif not blend.runs:
                gr.Markdown("No fine-tuned runs: start with `jointdiff serve --run DIR`.", elem_id="blend-off")
            else:
                _blend_tab(gr, blend)
    demo.queue(max_size=64, default_concurrency_limit=1)
    return demo


def _shown(o: Outcome) -> tuple[Any, Any, str]:
    """What a model event shows: the gallery, the files to download, the status line."""
    return o.gallery, o.files or None, o.status


def _jedi_tab(gr: Any, jedi: JeDiService) -> None:
    """The JeDi tab's two columns (inputs; results) and its events, inside the page being built."""

    def check(files: list[str] | None) -> tuple[Any, str]:
        o = jedi.check(files)
        return o.gallery, o.status

    def generate(
        files,
        prompts,
        ref_prompt,
        guidance,
        scale,
        image_scale,
        steps,
        seed,
        per_ref,
        progress=gr.Progress(),  # noqa: B008
    ):
        def on_step(i: int, n: int) -> None:
            progress((i, n), desc="denoising", unit="steps")

        progress(0, desc="starting")
        out = jedi.generate(files, prompts, ref_prompt, guidance, scale, image_scale, steps, seed, on_step, per_ref)
        return _shown(out)

    def toy(index: Any, count: Any) -> tuple[Any, ...]:  # one subject: no regions
        return (*jedi.toy(index, count), False)

    def toy_pair(index: Any) -> tuple[Any, ...]:  # two subjects: each reference its column
        paths, captions, prompts, status = jedi.toy_pair(index)
        return paths, captions, prompts, status, bool(paths)

    first = jedi.first_contact()  # a held-out toy subject and prompts ready: the first click personalises
    with gr.Column():
        refs, preview, toy_index, toy_count, toy_button, pair_button = _reference_inputs(gr, first.references)
        ref_prompt = gr.Textbox(
            first.caption,
            label="Reference captions (optional): one line for all, or one per reference (two subjects: one each)",
            placeholder="a photo of a toy",
            lines=2,
            elem_id="reference-caption",
        )
        prompts = gr.Textbox(
            label="Prompts, one per line (one image each)", lines=3, value=first.prompts, elem_id="prompts"
        )
        per_ref = gr.Checkbox(
            False,
            label="One subject per reference: each reference its own column, left to right (two subjects)",
            elem_id="one-subject-per-reference",
        )
        settings = _generation_settings(gr, jedi.default_steps)  # guidance, scale, image_scale, steps, seed
        button = gr.Button("Generate", variant="primary", elem_id="generate")
    with gr.Column():
        status = gr.Markdown(first.status, elem_id="status")
        gallery = gr.Gallery(label="Generated", columns=4, elem_id="gallery")
        files = gr.File(
            label="Download (PNG text chunk `jointdiff` holds the settings)",
            interactive=False,
            elem_id="download",
        )
    refs.change(check, refs, [preview, status], api_name="check_references")
    toy_button.click(toy, [toy_index, toy_count], [refs, ref_prompt, status, per_ref], api_name="toy_subject")
    pair_button.click(toy_pair, [toy_index], [refs, ref_prompt, prompts, status, per_ref], api_name="toy_pair")
    button.click(
        generate,
        [refs, prompts, ref_prompt, *settings, per_ref],
        [gallery, files, status],
        api_name="generate",
        concurrency_id="model",
        concurrency_limit=1,
    )


def _reference_inputs(gr: Any, initial: list[str]) -> tuple[Any, ...]:
    """The references (``initial`` paths shown first): uploads, their preview, and the held-out toy subject picker
    (index, views, button; a second button takes that subject and the next, two subjects in one image)."""
    refs = gr.File(
        initial or None, label=f"Reference images (1-{MAX_REFERENCES})", file_count="multiple", elem_id="references"
    )
    preview = gr.Gallery(
        initial or None,
        label="References",
        columns=4,
        height=180,
        object_fit="contain",
        fit_columns=False,
        elem_id="reference-preview",
    )
    with gr.Row(equal_height=True):
        toy_index = gr.Number(
            0, precision=0, minimum=0, label="or a held-out toy-world subject", scale=2, elem_id="toy-index"
        )
        toy_count = gr.Slider(1, MAX_REFERENCES, 1, step=1, label="views", scale=2, elem_id="toy-count")
        toy_button = gr.Button("Use toy subject", elem_id="toy", scale=1)
        pair_button = gr.Button("Two toy subjects", elem_id="toy-pair", scale=1)
    return refs, preview, toy_index, toy_count, toy_button, pair_button


def _generation_settings(gr: Any, steps_default: int = 30) -> tuple[Any, ...]:
    """Guidance strategy and scales (eq. 3 / eq. 4, the defaults of ``Guidance``), steps and seed."""
    guidance = gr.Radio(GUIDANCE_CHOICES, value=DEFAULT.strategy, label="Guidance strategy")
    with gr.Row():
        scale = gr.Slider(1.0, 20.0, DEFAULT.scale, step=0.5, label="Guidance scale (eq. 3; text scale of eq. 4)")
        image_scale = gr.Slider(1.0, 20.0, DEFAULT.scale, step=0.5, label="Image guidance scale (eq. 4 only)")
    with gr.Row():
        steps = gr.Slider(1, MAX_STEPS, steps_default, step=1, label="Steps", elem_id="steps")
        seed = gr.Number(0, precision=0, minimum=0, label="Seed", elem_id="seed")
    return guidance, scale, image_scale, steps, seed


def _blend_tab(gr: Any, blend: BlendService) -> None:
    """The DreamBlend tab (a run, a prompt, the two checkpoints) and its events, inside the page being built."""

    def step_choices(run: str | None) -> list[tuple[str, str]]:
        return [("automatic", "auto"), *((f"step {s}", str(s)) for s in blend.checkpoints(run))]

    def run_blend(run, prompt, underfit, overfit, seed, steps, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        return _shown(blend.run(run, prompt, underfit, overfit, seed, steps))

    with gr.Row():
        with gr.Column():
            run = gr.Dropdown(list(blend.runs), value=next(iter(blend.runs)), label="Fine-tuned run")
            b_prompt = gr.Textbox(label="Prompt", value=blend.example_prompt(run.value))
            with gr.Row():
                underfit = gr.Dropdown(
                    step_choices(run.value), value="auto", label="Underfit checkpoint", elem_id="underfit"
                )
                overfit = gr.Dropdown(
                    step_choices(run.value), value="auto", label="Overfit checkpoint", elem_id="overfit"
                )
            with gr.Row():
                b_steps = gr.Slider(1, MAX_STEPS, 50, step=1, label="Steps", elem_id="blend-steps")
                b_seed = gr.Number(0, precision=0, minimum=0, label="Seed")
            b_button = gr.Button("Blend", variant="primary", elem_id="blend")
        with gr.Column():
            b_status = gr.Markdown(elem_id="blend-status")
            b_gallery = gr.Gallery(label="Reference | DreamBlend", columns=2, elem_id="blend-gallery")
            b_files = gr.File(label="Download", interactive=False, elem_id="blend-download")
    run.change(
        lambda r: [gr.update(choices=step_choices(r), value="auto")] * 2 + [blend.example_prompt(r)],
        run,
        [underfit, overfit, b_prompt],
    )
    b_button.click(
        run_blend,
        [run, b_prompt, underfit, overfit, b_seed, b_steps],
        [b_gallery, b_files, b_status],
        api_name="dreamblend",
        concurrency_id="model",
        concurrency_limit=1,
    )


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, block: bool = True) -> str:
    """Serve ``demo`` on ``host:port`` with the upload limit; returns the local URL."""
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        max_file_size=f"{MAX_UPLOAD_MB}mb",
        prevent_thread_lock=not block,
        ssr_mode=False,
        share=False,
        quiet=not block,
    )
    return url


def load_services(
    model: str | os.PathLike,
    device: str,
    runs: Sequence[str],
    work_dir: str | os.PathLike,
    shipped: bool = False,
) -> tuple[JeDiService, BlendService]:
    """Load the JeDi pipeline onto ``device`` (the shipped miniature with its measured dtype, sampler and steps) and
    look up DreamBlend."""
    from jointdiff.common.paths import MINIATURE_SCOPE
    from jointdiff.jedi.cpu import shipped_cpu_dtype
    from jointdiff.jedi.pipeline import JointDiffusionPipeline
    from jointdiff.jedi.schedulers import SHIPPED_SAMPLER, SHIPPED_STEPS, make_scheduler

    dtype = {"torch_dtype": shipped_cpu_dtype()} if shipped and device == "cpu" else {}  # jointdiff/jedi/cpu.py
    pipe = JointDiffusionPipeline.from_pretrained(model, **dtype).to(device)
    pipe.set_progress_bar_config(disable=True)  # progress goes to the page, not the server log
    if shipped:
        pipe.scheduler = make_scheduler(SHIPPED_SAMPLER, pipe.scheduler.config)
    steps, scope = (SHIPPED_STEPS, MINIATURE_SCOPE) if shipped else (30, "")
    return JeDiService(pipe, str(model), work_dir, steps, scope), BlendService(runs, work_dir)
