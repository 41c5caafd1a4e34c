"""The web app of ``jointdiff serve``: the Gradio page (``page``), the model behind it without Gradio
(``services``) and what it takes in and hands out (``files``). See docs/app.md."""
