namespace KvmStorage.Core.Domains;

/// <summary>
/// Changes to one disk. A null setting leaves it alone; an empty string removes a string setting, and a boot order
/// of 0 removes the boot order.
/// </summary>
public sealed record DiskUpdate
{
    /// <summary>The new <c>&lt;driver type&gt;</c>; it cannot be removed (libvirt would read the image as raw).</summary>
    public string? Format { get; init; }

    public DiskSettings Settings { get; init; } = new();
}
