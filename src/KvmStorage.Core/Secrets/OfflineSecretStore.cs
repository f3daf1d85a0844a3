using System.Security.Cryptography;
using KvmStorage.Core.Backends;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.IO;

namespace KvmStorage.Core.Secrets;

/// <summary>
/// libvirt's persistent secrets as files, the way libvirtd keeps them (<c>/etc/libvirt/secrets</c>, mode 0700): the
/// definition in <c>UUID.xml</c> and the value, base64, in <c>UUID.base64</c>, both mode 0600. The daemon reads them
/// when it starts. Definitions are written under the folder's lock; the value never passes through a string.
/// </summary>
internal sealed class OfflineSecretStore(HostPaths paths, string hostName)
{
    private const UnixFileMode FileMode0600 = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private const UnixFileMode DirMode0700 = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    private string Folder => paths.Resolve("/etc/libvirt/secrets");

    public IReadOnlyList<VolumeSecret> List()
    {
        if (!Directory.Exists(Folder))
        {
            return [];
        }

        var secrets = new List<VolumeSecret>();
        foreach (string file in Directory.EnumerateFiles(Folder, "*.xml").Order(StringComparer.Ordinal))
        {
            secrets.Add(VolumeSecret.Parse(File.ReadAllText(file), hostName, paths.ToHostView(file)));
        }

        return secrets;
    }

    public VolumeSecret Define(string volumePath, ImagePassphrase value, Guid? uuid, string? description)
    {
        Directory.CreateDirectory(Folder, DirMode0700);
        using FileLock gate = LockFolder();
        IReadOnlyList<VolumeSecret> existing = List();
        if (existing.FirstOrDefault(s => s.UsageType == "volume" && s.Usage == volumePath) is { } taken)
        {
            throw new KvmStorageException(ErrorKind.AlreadyExists, SecretErrorIds.SecretExists, $"The secret {taken.Uuid} is already defined for '{volumePath}'; remove it first (Remove-VolumeSecret).", volumePath);
        }

        Guid id = uuid ?? Guid.NewGuid();
        if (existing.Any(s => s.Uuid == id))
        {
            throw new KvmStorageException(ErrorKind.AlreadyExists, SecretErrorIds.SecretExists, $"A secret with UUID {id} is already defined.", id);
        }

        string xml = VolumeSecret.DefinitionXml(id, volumePath, description);

        // The value first, so no definition ever names a secret without one; base64 as libvirt writes it.
        ReadOnlySpan<byte> raw = value.Bytes;
        byte[] encoded = GC.AllocateArray<byte>(((raw.Length + 2) / 3) * 4, pinned: true);
        try
        {
            System.Buffers.Text.Base64.EncodeToUtf8(raw, encoded, out _, out int written);
            AtomicFile.WriteAllBytes(Path.Combine(Folder, id.ToString("D") + ".base64"), encoded.AsSpan(0, written), FileMode0600);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(encoded);
        }

        AtomicFile.WriteAllText(Path.Combine(Folder, id.ToString("D") + ".xml"), xml + "\n", FileMode0600);
        return VolumeSecret.Parse(xml, hostName, id.ToString("D"));
    }

    public void Remove(Guid uuid)
    {
        using FileLock gate = LockFolder();
        string xml = Path.Combine(Folder, uuid.ToString("D") + ".xml");
        if (!File.Exists(xml))
        {
            throw new KvmStorageException(ErrorKind.NotFound, SecretErrorIds.SecretNotFound, $"No secret with UUID {uuid} is defined.", uuid);
        }

        // The definition first: a value without one is never read, while a definition without its value fails to load.
        File.Delete(xml);
        File.Delete(Path.Combine(Folder, uuid.ToString("D") + ".base64"));
        AtomicFile.SyncDirectory(Folder);
    }

    private FileLock LockFolder()
    {
        Directory.CreateDirectory(Folder, DirMode0700);
        return FileLock.Acquire(Path.Combine(Folder, ".kvmstorage.lock"));
    }
}
