"""The Hydra configs: a package, so that Hydra finds them (``pkg://hrformer.conf``) when a console script
(``hrformer-train``) imports the app rather than running it as ``__main__``."""
