namespace KvmStorage.Core.Libvirt;

/// <summary>
/// libvirt's <c>virDomainModificationImpact</c> flags (<c>VIR_DOMAIN_AFFECT_*</c>): which definitions of a domain a
/// device call changes.
/// </summary>
[Flags]
public enum LibvirtModificationImpact : uint
{
    /// <summary>VIR_DOMAIN_AFFECT_CURRENT: the running VM when it runs, else the persistent definition.</summary>
    Current = 0,

    /// <summary>VIR_DOMAIN_AFFECT_LIVE: the running VM.</summary>
    Live = LibvirtNative.VIR_DOMAIN_AFFECT_LIVE,

    /// <summary>VIR_DOMAIN_AFFECT_CONFIG: the persistent definition.</summary>
    Config = LibvirtNative.VIR_DOMAIN_AFFECT_CONFIG,
}
