"""Sphinx configuration of the course's static book (tools/book.py assembles the pages and runs it).

MyST-NB renders the committed outputs of the executed notebooks (``nb_execution_mode = "off"``:
nothing is executed); MathJax is served from the site itself (node_modules/mathjax, copied by
tools/book.py) so that equations render without a network.
"""

project = "BuPO notebooks"
author = "bupo-notebooks"
extensions = ["myst_nb"]
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath", "html_image"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type"]
exclude_patterns = ["_build"]
html_theme = "sphinx_book_theme"
html_title = "BuPO notebooks"
html_static_path = ["_static"]
html_theme_options = {
    "repository_url": "https://github.com/bupo-notebooks/bupo-notebooks",
    "use_repository_button": False,
    "use_download_button": False,
    "show_toc_level": 2,
}
html_context = {"default_mode": "light"}  # an explicit colour mode (the theme logs an error when it has none)
html_favicon = "favicon.svg"
mathjax_path = "mathjax/tex-chtml.js"
mathjax3_config = {"tex": {"tags": "none"}}
nb_render_markdown_format = "myst"
html_last_updated_fmt = None
html_copy_source = False
