"""`dockyard compose`: Compose files (the Compose Specification's common subset) run on Dockyard agents.

The pipeline, one module each: `yamlfile` (YAML 1.2 core through PyYAML) → `interpolate` (`${VAR}`…, with
`dotenv` for `.env`/`env_file`) → `schema` (the published JSON schema, then Dockyard's supported subset) →
`merge` (several `-f` files, docker compose's rules) → `resolve` (a typed `model.Project`: each service's
run config as `controller.api.containers.ContainerConfig`, depends_on conditions, health checks) → `load`
(file discovery, project name, profiles). `engine` runs a project on one agent through the typed client.
"""
