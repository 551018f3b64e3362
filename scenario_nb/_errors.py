"""The exception classes and how an HTTP error status becomes one. Users import them from
`scenario_nb.errors`, whose docstring is the one place the tree is documented."""

from __future__ import annotations

from typing import Any, Optional


class ScenarioError(Exception):
    """Base class of every scenario_nb error."""


class ConfigurationError(ScenarioError):
    """Credentials or settings are missing or invalid."""


class InputError(ScenarioError, ValueError):
    """A request was refused locally, before anything was sent or spent."""


class StorageError(ScenarioError):
    """The local history database or file store could not be used."""


class APIError(ScenarioError):
    """The API answered with an error status; `reason` is the server's own words."""

    status_code: int = 0

    def __init_subclass__(cls, status: int = 0, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.status_code = status or cls.status_code

    def __init__(self, reason: str, *, status_code: Optional[int] = None, body: Any = None,
                 hint: str = "") -> None:
        if status_code is not None:
            self.status_code = status_code
        self.reason = reason
        self.body = body
        self.hint = hint
        text = f"{reason} (HTTP {self.status_code})"
        super().__init__(f"{text}. {hint}" if hint else text)


class BadRequestError(APIError, status=400):
    """400: the request was refused as invalid; nothing was created."""


class AuthenticationError(APIError, status=401):
    """401: the key or secret was not accepted."""


class PermissionDeniedError(APIError, status=403):
    """403: the plan, the project or a signed URL does not allow this."""


class NotFoundError(APIError, status=404):
    """404: no such model, job, asset or workflow (in this project)."""


class ConflictError(APIError, status=409):
    """409: the request conflicts with the resource's state (e.g. a name in use)."""


class UnprocessableEntityError(APIError, status=422):
    """422: well-formed but not acceptable (e.g. a training set)."""


class RateLimitError(APIError, status=429):
    """429: a rate or parallel-job limit; nothing was created. `retry_after` only when the
    server gave one (its concurrency 429s do not)."""

    def __init__(self, reason: str, *, retry_after: Optional[float] = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(reason, **kwargs)


class ServerError(APIError, status=500):
    """5xx: the server failed; for a generation request the job may exist all the same."""


class APIConnectionError(ScenarioError):
    """The API could not be reached or dropped the connection."""


class APITimeoutError(APIConnectionError):
    """The API did not answer in time."""


class SubmitFailedError(ScenarioError):
    """A generation request provably created no job (refused before any job, or never sent)."""


class OutcomeUnknownError(ScenarioError):
    """A generation request's answer was lost and no job matching it has shown up yet.

    The job may exist (and be charged). The request stays in the history; a later `%scenario status`,
    re-run of the same request, or `client.recover()` adopts the job when the API lists it.
    """


class JobFailedError(ScenarioError):
    """A job ended in `failure` or `canceled`; carries the server's error and hint."""


    def __init__(self, job_id: str, error: str = "", hint: str = "", status: str = "failure",
                 text: Optional[str] = None) -> None:
        self.job_id = job_id
        self.error = error
        self.hint = hint
        self.status = status
        if text is None:
            if status == "canceled":
                text = f"job {job_id} was canceled"
            else:
                text = f"job {job_id} failed: {error or 'no reason given'}"
            if hint:
                text += f" (hint: {hint})"
        super().__init__(text)


class JobTimeoutError(JobFailedError):
    """We stopped waiting; the job may still finish on the server and can be re-attached by id."""


    def __init__(self, job_id: Optional[str], seconds: float, state: str = "") -> None:
        """`job_id` None: the request has no job yet (`state` says where it is), so there is nothing to re-attach."""
        self.seconds = seconds
        if job_id:
            hint = f"re-attach with %scenario job {job_id} or client.job({job_id!r})"
            text = (f"stopped waiting for job {job_id} after {seconds:g} s; it is still running on the server and "
                    f"will be charged when it finishes: {hint}")
        else:  # no job to re-attach to: the request is queued here, in flight, or its answer was lost
            hint = "wait() again; %scenario status shows where it is"
            text = f"stopped waiting after {seconds:g} s: {state or 'the request has no job yet'}; it goes on: {hint}"
        super().__init__(job_id or "", f"still not finished after {seconds:g} s", hint, "timeout", text=text)


class DownloadFailedError(JobFailedError):
    """The job succeeded (and was paid for) but its outputs could not be fetched; they can be, later, by id."""


    def __init__(self, job_id: str, cause: Exception) -> None:
        hint = f"%scenario job {job_id} (or client.job) fetches them again"
        super().__init__(job_id, str(cause), hint, "download-failed",
                         text=f"job {job_id} is paid for but its outputs could not be fetched ({cause}); {hint}")


class TrainingFailedError(JobFailedError):
    """A training ended `failed` or `training-canceled` (or never started); carries the job's error and hint."""

    def __init__(self, model_id: str, name: str, job_id: Optional[str] = None, error: str = "", hint: str = "",
                 status: str = "failed", text: Optional[str] = None) -> None:
        self.model_id = model_id
        if text is None:
            what = f"the training of {name} ({model_id})"
            if status == "training-canceled":
                text = f"{what} was canceled"
            elif status == "not-started":
                text = f"{what} never started: {error or 'no reason given'}"
            else:
                text = f"{what} failed: {error or 'no reason given'}"
            if hint:
                text += f" (hint: {hint})"
        super().__init__(job_id or "", error, hint, status, text=text)


class TrainingTimeoutError(TrainingFailedError):
    """We stopped waiting; the training goes on on the server and can be followed again by model."""

    def __init__(self, model_id: str, name: str, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(model_id, name, None, f"still training after {seconds:g} s", "", "timeout",
                         text=f"stopped waiting for the training of {name} ({model_id}) after {seconds:g} s; it "
                              f"goes on on the server: client.training({model_id!r}) or %scenario training "
                              f"{model_id} follows it again")


_BY_STATUS = {400: BadRequestError, 401: AuthenticationError, 403: PermissionDeniedError,
              404: NotFoundError, 409: ConflictError, 422: UnprocessableEntityError, 429: RateLimitError}

_HINTS = {
    401: "Check SCENARIO_API_KEY and SCENARIO_API_SECRET (Project Settings > API Keys)",
    403: "Your plan or project cannot use this; check the model's access and your project",
    429: "Scenario's rate or parallel-job limit was reached",
}


def error_for_status(status: int, reason: str, body: Any = None,
                     retry_after: Optional[float] = None) -> APIError:
    """Build the exception for an HTTP error status, keeping the server's reason."""
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else APIError)
    hint = _HINTS.get(status, "")
    if cls is RateLimitError:
        return RateLimitError(reason, retry_after=retry_after, status_code=status, body=body, hint=hint)
    return cls(reason, status_code=status, body=body, hint=hint)
