"""Selection algorithms: pure functions on arrays (numpy in, numpy out; torch inside, on
the GPU when one is present). They never see a model."""

from alb.select._backend import max_pairwise_distance
from alb.select.kcenter import kcenter_from_labelled, kcenter_greedy
from alb.select.kmeanspp import badge_seeding, d2_sampling, kmeanspp_seeding
from alb.select.noris import noris_greedy, noris_select, similarity_from_sq_dists

__all__ = ["badge_seeding", "d2_sampling", "kcenter_from_labelled", "kcenter_greedy", "kmeanspp_seeding", "max_pairwise_distance",
           "noris_greedy", "noris_select", "similarity_from_sq_dists"]
