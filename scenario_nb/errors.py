"""The exceptions scenario_nb raises, by family: `from scenario_nb.errors import NotFoundError`.

The families (`ScenarioError` and its direct subclasses) are also in `scenario_nb`'s own `__all__`; every
class here stays importable as `scenario_nb.<Name>` too.

Every message is one line that says what is wrong and what to do; none ever contains the API secret
(or the key, other than masked).

    ScenarioError
    ├── ConfigurationError      credentials or settings missing or invalid
    ├── InputError              a request refused before anything was sent or spent (also a ValueError)
    ├── StorageError            the local history or file store cannot be written or read
    ├── APIError                the API answered with an error status; `.status_code`, `.reason`, `.body`
    │   ├── BadRequestError         400
    │   ├── AuthenticationError     401
    │   ├── PermissionDeniedError   403
    │   ├── NotFoundError           404
    │   ├── ConflictError           409
    │   ├── UnprocessableEntityError 422
    │   ├── RateLimitError          429; `.retry_after` in seconds when the server said so
    │   └── ServerError             5xx
    ├── APIConnectionError      no answer (refused, dropped, unreachable)
    │   └── APITimeoutError         no answer in time
    ├── SubmitFailedError       a generation request provably created no job: nothing was charged
    ├── OutcomeUnknownError     a generation request's answer was lost and its job was not found (yet)
    └── JobFailedError          a job ended in failure or was canceled; `.job_id`, `.error`, `.hint`
        ├── JobTimeoutError         stopped waiting for a job (resume it by id) or a request with none yet
        ├── DownloadFailedError     the job succeeded but its outputs could not be fetched; fetch again by id
        └── TrainingFailedError     a training failed, was canceled or never started; `.model_id` too
            └── TrainingTimeoutError    stopped waiting for a training that goes on; follow it again by model
"""

from ._errors import (ScenarioError, ConfigurationError, InputError, StorageError, APIError,
                      BadRequestError, AuthenticationError, PermissionDeniedError, NotFoundError,
                      ConflictError, UnprocessableEntityError, RateLimitError, ServerError,
                      APIConnectionError, APITimeoutError, SubmitFailedError, OutcomeUnknownError,
                      JobFailedError, JobTimeoutError, DownloadFailedError, TrainingFailedError,
                      TrainingTimeoutError)

__all__ = [
    "ScenarioError",
    "ConfigurationError", "InputError", "StorageError",
    "APIError", "BadRequestError", "AuthenticationError", "PermissionDeniedError", "NotFoundError", "ConflictError",
    "UnprocessableEntityError", "RateLimitError", "ServerError",
    "APIConnectionError", "APITimeoutError",
    "SubmitFailedError", "OutcomeUnknownError",
    "JobFailedError", "JobTimeoutError", "DownloadFailedError", "TrainingFailedError", "TrainingTimeoutError",
]

for _name in __all__:  # shown (tracebacks, reprs) as scenario_nb.errors.NotFoundError: where users import them
    globals()[_name].__module__ = __name__
