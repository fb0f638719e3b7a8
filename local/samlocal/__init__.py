"""`sam local invoke` and `sam local start-api` on this machine: a Docker engine of our own (engine), a
Lambda-like base image built offline (image), and moto where the functions' containers can reach it
(backend)."""
