"""The docker buildx CLI as nodefleet uses it: argv builders, buildx's builder store (read, backed up, restored,
never written), node specs and names, the buildkitd config, helper builders and the nodes' doors."""
