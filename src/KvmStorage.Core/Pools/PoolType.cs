namespace KvmStorage.Core.Pools;

/// <summary>libvirt's storage pool types (formatstorage: <c>&lt;pool type=…&gt;</c>).</summary>
public enum PoolType
{
    Dir,
    Fs,
    Netfs,
    Logical,
    Disk,
    Iscsi,
    IscsiDirect,
    Scsi,
    Mpath,
    Rbd,
    Sheepdog,
    Gluster,
    Zfs,
    Vstorage,
}

/// <summary>Whether a pool is active, from libvirt's runtime state.</summary>
public enum PoolState
{
    Inactive,
    Building,
    Running,
    Degraded,
    Inaccessible,
}

public static class PoolTypes
{
    /// <summary>The name libvirt uses in XML: <c>dir</c>, <c>iscsi-direct</c>, ….</summary>
    public static string ToXmlName(this PoolType type) => type == PoolType.IscsiDirect ? "iscsi-direct" : type.ToString().ToLowerInvariant();

    /// <summary>The name libvirt gives a state: <c>inactive</c>, <c>building</c>, <c>running</c>, <c>degraded</c>, <c>inaccessible</c>.</summary>
    public static string ToName(this PoolState state) => state.ToString().ToLowerInvariant();

    public static bool TryParse(string? name, out PoolType type)
    {
        type = PoolType.Dir;
        if (name is null)
        {
            return false;
        }

        string normalized = name.Replace("-", string.Empty, StringComparison.Ordinal);
        return Enum.TryParse(normalized, ignoreCase: true, out type) && Enum.IsDefined(type) && !char.IsDigit(normalized[0]);
    }

    /// <summary>Pool types whose volumes are files in the target folder, which the module manages itself.</summary>
    public static bool HoldsFileVolumes(this PoolType type) => type is PoolType.Dir or PoolType.Fs or PoolType.Netfs;

    /// <summary>Pool types with a <c>&lt;target&gt;</c> element (gluster, rbd, sheepdog and vstorage have none).</summary>
    public static bool HasTarget(this PoolType type) => type is not (PoolType.Rbd or PoolType.Gluster or PoolType.Sheepdog or PoolType.Vstorage or PoolType.IscsiDirect);
}
