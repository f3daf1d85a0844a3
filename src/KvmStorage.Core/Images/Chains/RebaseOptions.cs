namespace KvmStorage.Core.Images.Chains;

/// <summary>What <see cref="ImageRebaser.Rebase"/> changes a qcow2 image's backing file to, and how.</summary>
public sealed class RebaseOptions
{
    /// <summary>
    /// The backing file name to record: absolute (the host's view), or relative to the image's folder as qemu
    /// resolves it. Null makes the image standalone.
    /// </summary>
    public string? BackingFile { get; init; }

    /// <summary>Format of the new backing file; detected from its content when null, and always recorded in the header.</summary>
    public ImageFormat? BackingFormat { get; init; }

    /// <summary>
    /// Only rewrite the header (<c>qemu-img rebase -u</c>): for a backing file that was moved or renamed with the
    /// same contents. The guest view changes if the new backing file's contents differ.
    /// </summary>
    public bool Unsafe { get; init; }

    /// <summary>How recorded backing names become files here and which may be read (see <see cref="BackingFileRule"/>); null is qemu's unrestricted rule.</summary>
    public BackingFileRule? BackingRule { get; init; }
}
