namespace KvmStorage.Core.Pools;

/// <summary>A <c>&lt;host name= port=&gt;</c> of a pool source.</summary>
public sealed record PoolSourceHost(string Name, int? Port)
{
    public override string ToString() => Port is null ? Name : $"{Name}:{Port}";
}

/// <summary>A pool's <c>&lt;auth&gt;</c>: chap for iSCSI, ceph for rbd, with the secret by UUID or usage.</summary>
public sealed record PoolSourceAuth(string Type, string Username, string? SecretUuid, string? SecretUsage);

/// <summary>The type-specific <c>&lt;source&gt;</c> of a pool, read-only.</summary>
public sealed class PoolSource
{
    public IReadOnlyList<PoolSourceHost> Hosts { get; init; } = [];

    public IReadOnlyList<string> Devices { get; init; } = [];

    public string? Directory { get; init; }

    /// <summary>Volume group (logical), Ceph pool (rbd), Gluster volume (gluster).</summary>
    public string? Name { get; init; }

    /// <summary>File system (fs, netfs) or partition table (disk) or lvm2 (logical).</summary>
    public string? Format { get; init; }

    public string? AdapterName { get; init; }

    public string? InitiatorIqn { get; init; }

    public int? ProtocolVersion { get; init; }

    public PoolSourceAuth? Auth { get; init; }

    public bool IsEmpty => Hosts.Count == 0 && Devices.Count == 0 && Directory is null && Name is null && Format is null && AdapterName is null;

    /// <summary>A one-line summary for tables: <c>nfs.example.com:/exports/vm</c>, <c>/dev/sdc (gpt)</c>, <c>vg_vms</c>.</summary>
    public override string ToString()
    {
        var parts = new List<string>();
        string hosts = string.Join(",", Hosts.Select(h => h.ToString()));
        if (hosts.Length > 0 && Directory is not null)
        {
            parts.Add($"{hosts}:{Directory}");
        }
        else if (hosts.Length > 0)
        {
            parts.Add(hosts);
        }
        else if (Directory is not null)
        {
            parts.Add(Directory);
        }

        parts.AddRange(Devices);
        if (Name is not null)
        {
            parts.Add(Name);
        }

        if (AdapterName is not null)
        {
            parts.Add(AdapterName);
        }

        string text = string.Join(" ", parts);
        return Format is null ? text : (text.Length == 0 ? Format : $"{text} ({Format})");
    }
}

/// <summary>The <c>&lt;target&gt;&lt;permissions&gt;</c> of a pool or volume.</summary>
public sealed record Permissions(UnixFileMode? Mode, int? Owner, int? Group, string? Label)
{
    public static Permissions None { get; } = new(null, null, null, null);

    /// <summary>libvirt's default mode for a directory it builds.</summary>
    public const UnixFileMode DefaultPoolMode = (UnixFileMode)0b111_001_001; // 0711

    /// <summary>libvirt's default mode for a new volume.</summary>
    public const UnixFileMode DefaultVolumeMode = UnixFileMode.UserRead | UnixFileMode.UserWrite; // 0600

    public static string FormatMode(UnixFileMode mode) => "0" + Convert.ToString((int)mode & 0xFFF, 8).PadLeft(3, '0');

    public static bool TryParseMode(string? text, out UnixFileMode mode)
    {
        mode = 0;
        if (string.IsNullOrWhiteSpace(text) || text.Length > 5 || !text.All(c => c is >= '0' and <= '7'))
        {
            return false;
        }

        mode = (UnixFileMode)Convert.ToInt32(text, 8);
        return true;
    }
}
