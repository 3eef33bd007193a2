"""The farm's operations by area (accounts, cameos, enrollment, jobs, audit); `FarmAPI`
combines them for the HTTP API and the CLI."""
