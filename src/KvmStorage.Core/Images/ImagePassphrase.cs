using System.Security.Cryptography;
using System.Text;

namespace KvmStorage.Core.Images;

/// <summary>
/// The passphrase of an encrypted image, as the UTF-8 bytes qemu's secret object and libvirt's secret value hold.
/// Kept in a pinned array that <see cref="Dispose"/> wipes; it never formats itself, so it cannot reach a message,
/// a log line or an error record by accident.
/// </summary>
public sealed class ImagePassphrase : IDisposable
{
    private readonly byte[] bytes;
    private bool disposed;

    private ImagePassphrase(int length)
    {
        bytes = GC.AllocateArray<byte>(length, pinned: true);
    }

    /// <summary>Encodes characters (from a SecureString's buffer, say) as UTF-8; the caller wipes its own copy.</summary>
    public static ImagePassphrase FromChars(ReadOnlySpan<char> chars)
    {
        var p = new ImagePassphrase(Encoding.UTF8.GetByteCount(chars));
        Encoding.UTF8.GetBytes(chars, p.bytes);
        return p;
    }

    /// <summary>Takes the passphrase's bytes as they are (a libvirt secret's value).</summary>
    public static ImagePassphrase FromBytes(ReadOnlySpan<byte> value)
    {
        var p = new ImagePassphrase(value.Length);
        value.CopyTo(p.bytes);
        return p;
    }

    /// <summary>Whether the passphrase is empty (qemu refuses empty LUKS passphrases when creating).</summary>
    public bool IsEmpty => bytes.Length == 0;

    internal ReadOnlySpan<byte> Bytes
    {
        get
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            return bytes;
        }
    }

    /// <summary>A copy for another owner (a reader that outlives the caller's scope).</summary>
    public ImagePassphrase Clone() => FromBytes(Bytes);

    public override string ToString() => "(passphrase)";

    public void Dispose()
    {
        if (!disposed)
        {
            CryptographicOperations.ZeroMemory(bytes);
            disposed = true;
        }
    }
}
