"""SCI: adaptive octree partition by spectrum concentration, one funnel SIREN per leaf, deblocking."""
