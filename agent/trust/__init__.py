"""Image trust on the agent: which images may run, decided here, whatever the caller.

policy.py      the policy file (`policy.toml`): strict parsing with line numbers, longest-prefix rules
signatures.py  cosign signatures of images: the table that keeps them, fetching them at pull, pushing one
verify.py      the verdict for one image: accept, reject, digests, or a signature by a listed key
manager.py     the policy in force (reloaded when its file changes), the run-time check, the RPCs' work
"""
