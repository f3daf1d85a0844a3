using System.Xml.Linq;
using KvmStorage.Core.Errors;

namespace KvmStorage.Core.Secrets;

/// <summary>
/// A libvirt secret (libvirt's "Secret XML", formatsecret.html) as the module emits it: never its value. A volume
/// secret's usage names the encrypted volume's path; a domain disk's <c>&lt;encryption&gt;</c> names its UUID.
/// </summary>
public sealed class VolumeSecret
{
    public required Guid Uuid { get; init; }

    /// <summary><c>volume</c>, <c>ceph</c>, <c>iscsi</c>, <c>tls</c>, <c>vtpm</c>; or null when the secret has no usage.</summary>
    public string? UsageType { get; init; }

    /// <summary>The volume path of a volume secret, the usage name of others.</summary>
    public string? Usage { get; init; }

    public string? Description { get; init; }

    /// <summary>libvirt never hands out the value of a private secret.</summary>
    public bool Private { get; init; }

    /// <summary>An ephemeral secret lives in the daemon's memory only.</summary>
    public bool Ephemeral { get; init; }

    public required string HostName { get; init; }

    /// <summary>The secret's XML for <c>virSecretDefineXML</c> (or the secrets folder): private and persistent, usage volume.</summary>
    public static string DefinitionXml(Guid uuid, string volumePath, string? description)
    {
        var secret = new XElement(
            "secret",
            new XAttribute("ephemeral", "no"),
            new XAttribute("private", "yes"));
        if (!string.IsNullOrEmpty(description))
        {
            secret.Add(new XElement("description", description));
        }

        secret.Add(
            new XElement("uuid", uuid.ToString("D")),
            new XElement("usage", new XAttribute("type", "volume"), new XElement("volume", volumePath)));
        return secret.ToString();
    }

    /// <summary>Reads a secret's XML (a file of the secrets folder, or <c>virSecretGetXMLDesc</c>).</summary>
    public static VolumeSecret Parse(string xml, string hostName, string source)
    {
        XElement root;
        try
        {
            root = XElement.Parse(xml);
        }
        catch (System.Xml.XmlException e)
        {
            throw new KvmStorageException(ErrorKind.InvalidData, SecretErrorIds.InvalidSecretXml, $"The secret '{source}' is not valid XML: {e.Message}", source, e);
        }

        if (root.Name != "secret" || !Guid.TryParse((string?)root.Element("uuid"), out Guid uuid))
        {
            throw new KvmStorageException(ErrorKind.InvalidData, SecretErrorIds.InvalidSecretXml, $"The secret '{source}' has no <secret> root with a valid <uuid>.", source);
        }

        XElement? usage = root.Element("usage");
        string? type = (string?)usage?.Attribute("type");
        return new VolumeSecret
        {
            Uuid = uuid,
            UsageType = type,
            Usage = type switch
            {
                "volume" => (string?)usage!.Element("volume"),
                "iscsi" => (string?)usage!.Element("target"),
                _ => (string?)usage?.Element("name"),
            },
            Description = (string?)root.Element("description"),
            Private = (string?)root.Attribute("private") == "yes",
            Ephemeral = (string?)root.Attribute("ephemeral") == "yes",
            HostName = hostName,
        };
    }
}

/// <summary>Error ids of libvirt secrets.</summary>
public static class SecretErrorIds
{
    /// <summary>No secret has the UUID, or none is defined for the volume (NotFound).</summary>
    public const string SecretNotFound = "SecretNotFound";

    /// <summary>A secret is already defined for the volume, or under the UUID (AlreadyExists).</summary>
    public const string SecretExists = "SecretExists";

    /// <summary>A secret's XML file cannot be read as a secret (InvalidData).</summary>
    public const string InvalidSecretXml = "InvalidSecretXml";
}
