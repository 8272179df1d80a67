"""(to be filled)"""


def register(app, packs_app, filter_app) -> None:
    return None
