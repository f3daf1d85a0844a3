using KvmStorage.Core.Backends.Live;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Libvirt;

namespace KvmStorage.Core.Secrets;

/// <summary>Secrets through a daemon's secret driver (libvirt-secret): defined, given their value, listed, undefined.</summary>
internal sealed class LiveSecrets(LiveHost host)
{
    public IReadOnlyList<VolumeSecret> List()
    {
        var secrets = new List<VolumeSecret>();
        foreach (LibvirtSecret secret in host.Connection.ListSecrets())
        {
            using (secret)
            {
                secrets.Add(VolumeSecret.Parse(secret.GetXml(), host.Name, secret.Uuid));
            }
        }

        return secrets;
    }

    public VolumeSecret Define(string volumePath, ImagePassphrase value, Guid? uuid, string? description)
    {
        host.EnsureWritable($"Defining a secret for '{volumePath}'", volumePath);
        if (Find(() => host.Connection.LookupVolumeSecret(volumePath)) is { } taken)
        {
            throw new KvmStorageException(ErrorKind.AlreadyExists, SecretErrorIds.SecretExists, $"The secret {taken} is already defined for '{volumePath}'; remove it first (Remove-VolumeSecret).", volumePath);
        }

        Guid id = uuid ?? Guid.NewGuid();
        if (Find(() => host.Connection.LookupSecret(id.ToString("D"))) is not null)
        {
            throw new KvmStorageException(ErrorKind.AlreadyExists, SecretErrorIds.SecretExists, $"A secret with UUID {id} is already defined.", id);
        }

        string xml = VolumeSecret.DefinitionXml(id, volumePath, description);
        using LibvirtSecret secret = host.Connection.DefineSecret(xml, volumePath);
        try
        {
            secret.SetValue(value.Bytes);
        }
        catch
        {
            // A secret without a value would make the VM fail to start with a less clear error: take it back.
            try
            {
                secret.Undefine();
            }
            catch (LibvirtException)
            {
            }

            throw;
        }

        return VolumeSecret.Parse(secret.GetXml(), host.Name, secret.Uuid);
    }

    public void Remove(Guid uuid)
    {
        host.EnsureWritable($"Removing the secret {uuid}", uuid.ToString("D"));
        LibvirtSecret secret;
        try
        {
            secret = host.Connection.LookupSecret(uuid.ToString("D"));
        }
        catch (LibvirtException ex) when (ex.Code == LibvirtErrorCodes.NoSecret)
        {
            throw new KvmStorageException(ErrorKind.NotFound, SecretErrorIds.SecretNotFound, $"No secret with UUID {uuid} is defined on {host.Name}.", uuid, ex);
        }

        using (secret)
        {
            secret.Undefine();
        }
    }

    private static string? Find(Func<LibvirtSecret> lookup)
    {
        try
        {
            using LibvirtSecret secret = lookup();
            return secret.Uuid;
        }
        catch (LibvirtException ex) when (ex.Code == LibvirtErrorCodes.NoSecret)
        {
            return null;
        }
    }
}
