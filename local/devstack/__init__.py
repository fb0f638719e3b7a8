"""devstack: the template-driven local stand-in for AWS, shared by the tests, the local stack and the
benchmarks. Resources are created from `template.yaml`'s own definitions, so code and infrastructure
cannot drift. Not shipped to Lambda."""
