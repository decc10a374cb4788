//! GitHub App integration: webhook signatures, app authentication, the REST
//! calls nbci makes (compare, tarball, check runs) and the check-run bodies.
