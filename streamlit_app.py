"""slmrag chat UI: `streamlit run streamlit_app.py` from a checkout (`slmrag ui` does the same anywhere).

The page itself is app/ui/streamlit_app.py, inside the package so that a wheel install ships it; this file
runs it afresh on every Streamlit rerun (an import would run it only once per process).
"""

import runpy

runpy.run_module("app.ui.streamlit_app", run_name="__main__")
