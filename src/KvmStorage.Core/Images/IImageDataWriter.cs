namespace KvmStorage.Core.Images;

/// <summary>
/// Writes guest data into an existing image in place, as a guest's writes would (qemu's <c>bdrv_pwrite</c>): what
/// <c>qemu-img commit</c> writes into its base and <c>qemu-img rebase</c> into its image. Opened through the format's
/// driver (<see cref="IImageFormat.OpenDataWriter"/>) by a caller that holds the image's write lock.
/// </summary>
internal interface IImageDataWriter : IDisposable
{
    /// <summary>The image's virtual size in bytes.</summary>
    long VirtualSize { get; }

    /// <summary>The unit the image allocates in: writes of whole units never read what they replace.</summary>
    int ClusterSize { get; }

    /// <summary>Whether ranges the image leaves unallocated read from a backing file.</summary>
    bool HasBackingFile { get; }

    void Write(long guestOffset, ReadOnlySpan<byte> data);

    /// <summary>Makes the range read as zeros.</summary>
    void WriteZeroes(long guestOffset, long length);

    /// <summary>Drops everything the image holds itself, so that it reads through to its backing file.</summary>
    void DiscardAll();

    /// <summary>Makes everything written so far durable.</summary>
    void Flush();
}
