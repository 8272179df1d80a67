"""The chat UI's Streamlit page (``streamlit_app.py``), shipped inside the package so an installed wheel runs it.

Streamlit puts the folder of the script it runs at the front of ``sys.path``, so this folder holds only the
page: a module here named like a standard-library one (``app/`` has ``numbers.py``) would shadow it.
"""
