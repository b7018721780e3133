"""Features as components, each one package with its config, logic, SQL, routes, periodic work and
declared metrics (see `base.Component`). Components do not import each other: where one needs
another (retention asks sampling which traces are kept), it names a small protocol and the assembly
(`clew.assembly`) hands it the other component."""
