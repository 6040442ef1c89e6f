"""kumiai's tenant layer: Pulumi components, programs and the isolation rules they must satisfy.

`naming` and `rules` are pure (no Pulumi import) so the CLI can check a plan without loading the Pulumi runtime;
`tenant`, `platform` and `programs` build the resources; `policypack` runs the same rules inside the engine.
"""
