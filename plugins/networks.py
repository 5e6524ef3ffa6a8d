"""First-party networks, registered through the same plugin hook a third-party package implements."""

from toolkit.hookspecs import hookimpl
from toolkit_plugins.discriminators import ContentDiscriminator, DritImageDiscriminator
from toolkit_plugins.encoders import DritAttributeEncoder, DritContentEncoder
from toolkit_plugins.generators import DritGenerator


@hookimpl
def register_components(register):
    """Register the DRIT++/MDMM encoders, generator and discriminators."""
    register("content_encoder", "drit", DritContentEncoder)
    register("attribute_encoder", "drit", DritAttributeEncoder)
    register("generator", "drit", DritGenerator)
    register("discriminator", "drit", DritImageDiscriminator)
    register("discriminator", "content", ContentDiscriminator)
