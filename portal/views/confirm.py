"""Confirming a destructive action, with and without JavaScript: one mechanism for all.

A destructive action (disable a client, revoke a secret, rotate keys, remove a
member …) is a POST view whose route also answers GET. Its button
(``ui.confirm_button`` in ``templates/portal/_macros.html``) is a GET form to
that same URL: without JavaScript it opens the confirmation page rendered here
(what happens, a POST form with the CSRF token, a cancel link back); with
JavaScript (``static/js/forms.js``) a confirm dialog asks and posts directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, TypeVar

from flask import abort, render_template, request
from flask.typing import ResponseReturnValue

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Confirmation:
    """What the confirmation page says about one action."""

    title: str            #: the question, e.g. "Disable billing-worker?"
    consequence: str      #: what happens, in a sentence or two
    button: str           #: the confirming button's label
    back: str             #: where Cancel leads (the page the action was started from)
    #: Fields of the starting form to send along (e.g. the new key's algorithm):
    #: name -> allowed values (None: any value of at most 200 characters).
    carry: Mapping[str, tuple[str, ...] | None] = field(default_factory=dict)


def confirm_first(describe: Callable[..., Confirmation],
                  allowed: Callable[[], bool] | None = None) -> Callable[[F], F]:
    """On GET, show the confirmation page of the POST view this decorates.

    ``describe`` takes the view's URL arguments (it may abort 404 for a missing
    object, as the view would); ``allowed`` (e.g. ``can_manage``) refuses a GET
    with 403 for someone who could not confirm anyway.
    """

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            if request.method != "GET":
                return view(*args, **kwargs)  # type: ignore[no-any-return]
            if allowed is not None and not allowed():
                abort(403, "Your role in this organisation is read-only.")
            confirmation = describe(**kwargs)
            carried = {}
            for name, values in confirmation.carry.items():
                value = request.args.get(name, "")
                if (values is None and len(value) <= 200) or (values and value in values):
                    carried[name] = value
            return render_template("portal/confirm.html", c=confirmation,
                                   action=request.path, carried=carried)

        return wrapper  # type: ignore[return-value]

    return decorate
