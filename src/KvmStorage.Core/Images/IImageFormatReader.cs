using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images;

/// <summary>The first bytes and the last sector of a file, enough to recognise every supported format.</summary>
public sealed class ImageProbe
{
    public ImageProbe(string path, byte[] head, byte[] tail, ulong fileLength)
    {
        Path = path;
        Head = head;
        Tail = tail;
        FileLength = fileLength;
    }

    public string Path { get; }

    /// <summary>Up to the first 64 KiB of the file.</summary>
    public byte[] Head { get; }

    /// <summary>Up to the last 512 bytes of the file (VHD's footer lives there).</summary>
    public byte[] Tail { get; }

    public ulong FileLength { get; }
}

/// <summary>
/// One image format's detection and header reader. Readers never trust a value read from the file:
/// every offset is checked against the file length and every allocation is bounded.
/// </summary>
public interface IImageFormatReader
{
    ImageFormat Format { get; }

    /// <summary>Probe order: lower runs first (qemu probes content signatures; raw is the fallback).</summary>
    int Priority { get; }

    bool Probe(ImageProbe probe);

    /// <summary>Reads the image's header details. Throws <c>KvmStorageException</c> (InvalidData) for malformed files.</summary>
    ImageInfo ReadInfo(SafeFileHandle handle, ImageProbe probe, ulong actualSize);
}
